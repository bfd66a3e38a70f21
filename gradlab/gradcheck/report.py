"""What a gradient check found: per-leaf rows, the worst entries, and a readable table."""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any, Literal

import jax
import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from gradlab.gradcheck.bands import Verdict

__all__ = ["CheckReport", "EntryMismatch", "LeafReport", "LeafStatus"]

LeafStatus = Literal["verified", "wrong", "unresolved"]


@dataclasses.dataclass(frozen=True)
class EntryMismatch:
    """One entry of a leaf where the numerical and analytical gradients differ.

    Attributes:
        index: The entry's index in the leaf (a tuple, one int per axis); in directional
            mode ``(j,)``, the direction's number.
        numerical: The centered difference ``(f(θ+h) − f(θ−h)) / 2h``.
        analytical: ``jax.grad``'s value (``jax.jvp``'s in forward mode; ``H·e_i``'s entry at
            order 2).
        abs_error: ``|numerical − analytical|``.
        kink: True when the two one-sided differences disagree (a kink, excluded).
        part: ``"real"`` or ``"imag"`` for complex leaves, ``"direction"`` in directional
            mode, ``"v{j}"`` for the cotangent of a vector-valued ``f``, ``"row {component}"``
            at order 2 (which gradient component); else ``""``.
    """

    index: tuple[int, ...]
    numerical: float
    analytical: float
    abs_error: float
    kink: bool = False
    part: str = ""


@dataclasses.dataclass(frozen=True)
class LeafReport:
    """The check of one leaf of the parameters.

    Attributes:
        path: The leaf's pytree path, ``/``-separated (e.g. ``"layers/0/kernel"``).
        shape: The leaf's shape.
        dtype: The leaf's dtype as given (the check itself runs in float64).
        relative_error: ``||num − ana|| / (||num|| + ||ana||)`` over the entries not at kinks.
        verdict: The lecture's band for ``relative_error``.
        status: ``"verified"`` (within tolerance), ``"wrong"`` (outside tolerance and beyond
            what rounding can explain) or ``"unresolved"`` (the gradient is too small next to
            ``|f|`` for finite differences at this eps to say).
        n_kinks: Entries whose one-sided differences disagree (kept out of the verdict).
        n_nonfinite: Entries where ``f(θ ± h)`` was NaN or Inf (kept out of the verdict).
        noise_floor: The relative error that rounding in ``f`` alone can cause at this eps.
        grad_norm: ``||ana||``, the analytical gradient's norm over the leaf.
        worst: The entries with the largest ``|num − ana|``, largest first.
        resolving_eps: For unresolved leaves, the step that would bring the noise floor under
            the tolerance, when that step is still small (at most 1e-3); else None.
        note: Why a leaf is unresolved, in words; empty otherwise.
        ad: Which derivative the row checks: ``"reverse"`` (``jax.grad``/``jax.vjp``) or
            ``"forward"`` (``jax.jvp``); at order 2, the outer derivative of the gradient.
        eps: The finite-difference step used for this leaf.
        estimated_error: With ``eps="auto"``: the relative error of the finite differences
            themselves estimated from steps ``h`` and ``2h`` (truncation plus rounding).
    """

    path: str
    shape: tuple[int, ...]
    dtype: str
    relative_error: float
    verdict: Verdict
    status: LeafStatus
    n_kinks: int
    n_nonfinite: int
    noise_floor: float
    grad_norm: float
    worst: tuple[EntryMismatch, ...]
    resolving_eps: float | None = None
    note: str = ""
    ad: str = "reverse"
    eps: float | None = None
    estimated_error: float | None = None

    @property
    def size(self) -> int:
        """Number of entries in the leaf."""
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this row."""
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["size"] = self.size
        d["worst"] = [{**dataclasses.asdict(w), "index": list(w.index)} for w in self.worst]
        return d


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.2e}"


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + (",)" if len(shape) == 1 else ")")


_STATUS_STYLE = {"verified": "green", "wrong": "bold red", "unresolved": "yellow"}


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """The result of :func:`gradlab.check`.

    ``str(report)`` is a readable table; ``report.to_dict()`` is JSON-serialisable.

    Attributes:
        ok: True when no leaf is wrong: every leaf agrees to ``tolerance`` after kinks, or
            disagrees by no more than rounding explains (then it is ``"unresolved"``). With
            ``require_resolved=True``, unresolved leaves make it False too.
        relative_error: The lecture's relative error over every checked entry not at a kink.
        verdict: The lecture's band for ``relative_error``.
        leaves: One :class:`LeafReport` per checked leaf, in pytree order.
        skipped: Paths and dtypes of the integer/bool leaves that were not checked.
        eps: The finite-difference step; ``"auto"`` when chosen per leaf (see
            ``LeafReport.eps``), the largest per-leaf step in the float32 fallback.
        tolerance: The relative-error tolerance each leaf is held to.
        dtype: The dtype the check ran in (``"float64"``, or ``"float32"`` on backends
            without float64; ``notes`` says which and why).
        value: ``f(θ)`` (for a vector-valued ``f``: its projection on the first cotangent).
        n_evaluations: How many times ``f`` (at order 2: its gradient) was evaluated for
            finite differences.
        seconds: Wall time of the check, compilation included.
        mode: How perturbations were chosen (``"full"``: every entry; ``"sample (...)"``;
            ``"directional (...)"``: random unit directions per leaf).
        notes: Anything the reader should know (e.g. ``f`` computes in float32).
        order: 1 (gradients) or 2 (Hessian-vector products against differences of the
            gradient).
        ad: ``"reverse"``, ``"forward"`` or ``"both"``: which autodiff was checked.
        output: What was checked of ``f``'s output: ``"scalar"``, or its shape and the
            random cotangents it was projected on.
        cotangents: For a vector-valued ``f``, the cotangents ``v_j`` (pytrees of NumPy
            arrays shaped like ``f``'s output); each leaf is checked on ``<v_j, f(θ)>``.
    """

    ok: bool
    relative_error: float
    verdict: Verdict
    leaves: tuple[LeafReport, ...]
    skipped: tuple[str, ...]
    eps: float | str
    tolerance: float
    dtype: str
    value: float
    n_evaluations: int
    seconds: float
    mode: str = "full"
    notes: tuple[str, ...] = ()
    order: int = 1
    ad: str = "reverse"
    output: str = "scalar"
    cotangents: tuple[Any, ...] = ()

    @property
    def wrong(self) -> tuple[LeafReport, ...]:
        """The leaves whose gradient is wrong."""
        return tuple(leaf for leaf in self.leaves if leaf.status == "wrong")

    @property
    def unresolved(self) -> tuple[LeafReport, ...]:
        """The leaves that finite differences at this eps cannot verify."""
        return tuple(leaf for leaf in self.leaves if leaf.status == "unresolved")

    @property
    def n_kinks(self) -> int:
        """Entries at kinks, over all leaves."""
        return sum(leaf.n_kinks for leaf in self.leaves)

    @property
    def n_entries(self) -> int:
        """Checked entries, over all leaves."""
        return sum(leaf.size for leaf in self.leaves if leaf.ad == self.leaves[0].ad)

    def __getitem__(self, key: str | tuple[str, str]) -> LeafReport:
        """The row of the leaf at ``path``; ``report[path, "forward"]`` picks the ``ad``.

        With ``ad="both"`` a bare path gives the reverse-mode row.
        """
        path, ad = key if isinstance(key, tuple) else (key, None)
        for leaf in self.leaves:
            if leaf.path == path and ad in (None, leaf.ad):
                return leaf
        known = ", ".join(sorted({leaf.path for leaf in self.leaves}))
        kinds = ", ".join(sorted({leaf.ad for leaf in self.leaves}))
        raise KeyError(f"no checked leaf at {key!r}; the leaves are: {known} (ad: {kinds})")

    @property
    def eps_text(self) -> str:
        """``eps`` as shown in the table: a number, or ``"auto"``."""
        return self.eps if isinstance(self.eps, str) else f"{self.eps:g}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the whole report."""
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("leaves", "skipped", "notes", "cotangents")
        }
        d["leaves"] = [leaf.to_dict() for leaf in self.leaves]
        d["skipped"] = list(self.skipped)
        d["notes"] = list(self.notes)
        d["cotangents"] = [
            jax.tree_util.tree_map(lambda v: np.asarray(v).tolist(), c) for c in self.cotangents
        ]
        d["n_entries"] = self.n_entries
        d["n_kinks"] = self.n_kinks
        return d

    def summary(self) -> str:
        """One line: the outcome, the overall relative error and its band."""
        head = "OK" if self.ok else "FAILED"
        n_leaves = len({leaf.path for leaf in self.leaves})
        parts = [
            f"gradlab.check {head}: {self.n_entries:,} entries in {n_leaves} "
            + ("leaf" if n_leaves == 1 else "leaves"),
            f"relative error {_fmt(self.relative_error)} ({self.verdict})",
        ]
        if self.wrong:
            both = self.ad == "both"
            parts.append(
                "wrong: "
                + ", ".join(leaf.path + (f" ({leaf.ad})" if both else "") for leaf in self.wrong)
            )
        if self.unresolved:
            parts.append(f"{len(self.unresolved)} unresolved at eps={self.eps_text}")
        if self.n_kinks:
            parts.append(f"{self.n_kinks} kinks excluded")
        return "; ".join(parts)

    def table(self) -> Table:
        """The per-leaf table as a :class:`rich.table.Table` (the summary line goes above)."""
        extra = ""
        if self.order != 1 or self.ad != "reverse":
            extra += f"order={self.order}  ad={self.ad}  "
        if self.output != "scalar":
            extra += f"output={self.output}  "
        table = Table(
            box=box.SIMPLE_HEAD,
            caption=(
                f"mode={self.mode}  eps={self.eps_text}  tolerance={self.tolerance:g}  "
                f"dtype={self.dtype}  {extra}f(θ)={self.value:.6g}  "
                f"evaluations={self.n_evaluations:,}  {self.seconds:.2f} s"
            ),
            caption_justify="left",
        )
        show_ad = len({leaf.ad for leaf in self.leaves}) > 1
        show_eps = isinstance(self.eps, str) or len({leaf.eps for leaf in self.leaves}) > 1
        show_est = any(leaf.estimated_error is not None for leaf in self.leaves)
        columns = [
            ("leaf", "left", True),
            ("ad", "left", show_ad),
            ("shape", "left", True),
            ("rel. error", "right", True),
            ("band", "left", True),
            ("status", "left", True),
            ("kinks", "right", True),
            ("noise floor", "right", True),
            ("eps", "right", show_eps),
            ("est. error", "right", show_est),
            ("‖grad‖" if self.order == 1 else "‖H cols‖", "right", True),
        ]
        for name, justify, shown in columns:
            if shown:
                table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for leaf in self.leaves:
            status: str = leaf.status
            if leaf.resolving_eps is not None:
                status += f" (try eps={leaf.resolving_eps:.0e})"
            cells = [
                leaf.path,
                leaf.ad,
                _shape(leaf.shape),
                _fmt(leaf.relative_error),
                "—" if leaf.status == "unresolved" else leaf.verdict,
                f"[{_STATUS_STYLE[leaf.status]}]{status}[/]",
                str(leaf.n_kinks),
                _fmt(leaf.noise_floor),
                _fmt(leaf.eps or 0.0),
                _fmt(leaf.estimated_error or 0.0),
                _fmt(leaf.grad_norm),
            ]
            table.add_row(*(c for c, (*_, shown) in zip(cells, columns, strict=True) if shown))
        return table

    def _details(self) -> list[str]:
        lines: list[str] = []
        for leaf in self.leaves:
            if leaf.status == "verified" or not leaf.worst:
                continue
            ad = f", {leaf.ad} mode" if self.ad == "both" else ""
            lines.append(f"worst entries of {leaf.path} ({leaf.status}{ad}):")
            if leaf.note:
                lines.append(f"  {leaf.note}")
            for w in leaf.worst:
                part = f" {w.part}" if w.part else ""
                kink = "  [kink]" if w.kink else ""
                lines.append(
                    f"  {w.index}{part}: numerical {w.numerical:+.10e}  "
                    f"analytical {w.analytical:+.10e}  |diff| {w.abs_error:.2e}{kink}"
                )
        if self.skipped:
            lines.append("not checked (not floating point): " + ", ".join(self.skipped))
        if self.cotangents:
            lines.append(
                f"output checked through {len(self.cotangents)} random cotangents v_j: "
                "each leaf compares the gradient of <v_j, f(θ)>; see report.cotangents"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        return lines

    def __rich_console__(self, console: Console, options: Any) -> Any:
        yield f"[bold {'green' if self.ok else 'red'}]{self.summary()}[/]"
        yield self.table()
        yield from self._details()

    def __str__(self) -> str:
        buf = io.StringIO()
        console = Console(file=buf, width=120, color_system=None, force_terminal=False)
        console.print(self.summary(), markup=False, highlight=False, soft_wrap=True)
        console.print(self.table())
        for line in self._details():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return buf.getvalue().rstrip()

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

from gradlab.gradcheck.report._bands import Verdict
from gradlab.gradcheck.report._leaf_report import LeafReport

__all__ = ["CheckReport", "Outcome"]

Outcome = Literal["passed", "failed", "inconclusive"]


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
        outcome: ``"passed"``: agreement was established for every leaf (and ``f`` is
            deterministic, and the gradient at the parameters' own dtype agrees with the
            float64 one); ``"failed"``: a gradient is wrong, or ``f`` is not deterministic;
            ``"inconclusive"``: nothing is wrong, but some leaf could not be verified
            (``reasons`` says why and what to do). :attr:`ok` is ``outcome == "passed"``.
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
        entries: Which entries were moved (``"full"``: every entry; ``"sample (...)"``;
            ``"directional (...)"``: random unit directions per leaf).
        notes: Anything the reader should know (e.g. ``f`` computes in float32).
        order: 1 (gradients) or 2 (Hessian-vector products against differences of the
            gradient).
        autodiff: ``"reverse"``, ``"forward"`` or ``"both"``: which autodiff was checked.
        output: What was checked of ``f``'s output: ``"scalar"``, or its shape and the
            random cotangents it was projected on.
        projections: For a vector-valued ``f``, the cotangents ``v_j`` (pytrees of NumPy
            arrays shaped like ``f``'s output); each leaf is checked on ``<v_j, f(θ)>``.
        reasons: Why the check failed or is inconclusive, each with what to do.
        promoted: What ran in reduced precision inside ``f`` and was promoted to float64 for
            the check (or could not be, and is said so).
        stages: Evaluations of ``f`` per stage of the judging: ``"first step"``, and where
            needed ``"second step"`` (kinks, rounding), ``"retry at larger steps"``,
            ``"flatness probe"``, ``"ties broken nearby"``.

    Example:
        >>> import jax.numpy as jnp
        >>> import gradlab
        >>> report = gradlab.check(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.ones(3)})
        >>> report.outcome, report.ok, report.reasons, report["w"].status
        ('passed', True, (), 'verified')
        >>> print(report.summary())
        gradlab.check OK: 3 entries in 1 leaf; relative error ... (happy)
    """

    outcome: Outcome
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
    entries: str = "full"
    notes: tuple[str, ...] = ()
    order: int = 1
    autodiff: str = "reverse"
    output: str = "scalar"
    projections: tuple[Any, ...] = ()
    reasons: tuple[str, ...] = ()
    promoted: tuple[str, ...] = ()
    stages: tuple[tuple[str, int], ...] = ()

    @property
    def ok(self) -> bool:
        """True only when the check passed: agreement established for every leaf."""
        return self.outcome == "passed"

    def __bool__(self) -> bool:
        """:attr:`ok`: ``assert gradlab.check(...)`` fails unless the check passed.

        A failed or inconclusive report is falsy, as torch's ``gradcheck`` returns False;
        ``gradlab.assert_check`` does the same with the report as the error's message.
        """
        return self.ok

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
        return sum(leaf.size for leaf in self.leaves if leaf.autodiff == self.leaves[0].autodiff)

    def __getitem__(self, key: str | tuple[str, str]) -> LeafReport:
        """The row of the leaf at ``path``; ``report[path, "forward"]`` picks the ``autodiff``.

        With ``autodiff="both"`` a bare path gives the reverse-mode row.
        """
        path, ad = key if isinstance(key, tuple) else (key, None)
        for leaf in self.leaves:
            if leaf.path == path and ad in (None, leaf.autodiff):
                return leaf
        known = ", ".join(sorted({leaf.path for leaf in self.leaves}))
        kinds = ", ".join(sorted({leaf.autodiff for leaf in self.leaves}))
        raise KeyError(f"no checked leaf at {key!r}; the leaves are: {known} (autodiff: {kinds})")

    @property
    def eps_text(self) -> str:
        """``eps`` as shown in the table: a number, or ``"auto"``."""
        return self.eps if isinstance(self.eps, str) else f"{self.eps:g}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the whole report."""
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name
            not in ("leaves", "skipped", "notes", "projections", "reasons", "promoted", "stages")
        }
        d["ok"] = self.ok
        d["reasons"] = list(self.reasons)
        d["promoted"] = list(self.promoted)
        d["stages"] = dict(self.stages)
        d["leaves"] = [leaf.to_dict() for leaf in self.leaves]
        d["skipped"] = list(self.skipped)
        d["notes"] = list(self.notes)
        d["projections"] = [
            jax.tree_util.tree_map(lambda v: np.asarray(v).tolist(), c) for c in self.projections
        ]
        d["n_entries"] = self.n_entries
        d["n_kinks"] = self.n_kinks
        return d

    def summary(self) -> str:
        """One line: the outcome, the overall relative error and its band."""
        head = {"passed": "OK", "failed": "FAILED", "inconclusive": "INCONCLUSIVE"}[self.outcome]
        parts = [
            f"gradlab.check {head}: {self._coverage()}",
            f"relative error {_fmt(self.relative_error)} ({self.verdict})",
        ]
        if self.wrong:
            both = self.autodiff == "both"
            parts.append(
                "wrong: "
                + ", ".join(
                    leaf.path + (f" ({leaf.autodiff})" if both else "") for leaf in self.wrong
                )
            )
        if self.unresolved:
            parts.append(f"unresolved: {', '.join(leaf.path for leaf in self.unresolved)}")
        if self.n_kinks:
            parts.append(f"{self.n_kinks} kinks checked against their one-sided slopes")
        n_ties = sum(leaf.n_ties for leaf in self.leaves)
        if n_ties:
            parts.append(f"{n_ties} at ties verified nearby")
        return "; ".join(parts)

    def _coverage(self) -> str:
        """How much was checked: every entry, a sample of them, or random directions."""
        rows = [leaf for leaf in self.leaves if leaf.autodiff == self.leaves[0].autodiff]
        n_leaves = len(rows)
        where = f"of {rows[0].path}" if n_leaves == 1 else f"in {n_leaves} leaves"
        leaves = "leaf" if n_leaves == 1 else "leaves"
        if all(leaf.n_checked is None for leaf in rows):
            return f"{self.n_entries:,} entries in {n_leaves} {leaves}"
        verb = "passed" if self.ok else "checked"
        if self.entries.startswith("directional"):
            per = max(leaf.n_checked or 0 for leaf in rows)
            return (
                f"{verb} along {per} random directions per leaf, {self.n_entries:,} entries "
                f"in {n_leaves} {leaves} (a screen: no single entry verified)"
            )
        moved = sum(leaf.n_checked if leaf.n_checked is not None else leaf.size for leaf in rows)
        return f"{verb} on {moved:,} of {self.n_entries:,} entries {where}"

    def _stages_text(self) -> str:
        if len(self.stages) < 2:
            return ""
        return " (" + ", ".join(f"{stage} {n:,}" for stage, n in self.stages) + ")"

    def table(self) -> Table:
        """The per-leaf table as a :class:`rich.table.Table` (the summary line goes above)."""
        extra = ""
        if self.order != 1 or self.autodiff != "reverse":
            extra += f"order={self.order}  autodiff={self.autodiff}  "
        if self.output != "scalar":
            extra += f"output={self.output}  "
        table = Table(
            box=box.SIMPLE_HEAD,
            caption=(
                f"entries={self.entries}  eps={self.eps_text}  tolerance={self.tolerance:g}  "
                f"dtype={self.dtype}  {extra}f(θ)={self.value:.6g}  "
                f"evaluations={self.n_evaluations:,}{self._stages_text()}  {self.seconds:.2f} s"
            ),
            caption_justify="left",
        )
        show_ad = len({leaf.autodiff for leaf in self.leaves}) > 1
        show_eps = isinstance(self.eps, str) or len({leaf.eps for leaf in self.leaves}) > 1
        show_est = any(leaf.estimated_error is not None for leaf in self.leaves)
        columns = [
            ("leaf", "left", True),
            ("autodiff", "left", show_ad),
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
                leaf.autodiff,
                _shape(leaf.shape),
                _fmt(leaf.relative_error),
                "flat" if leaf.flat else "—" if leaf.status == "unresolved" else leaf.verdict,
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
        lines.extend(f"{self.outcome}: {r}" for r in self.reasons)
        for leaf in self.leaves:
            if leaf.status == "verified":
                if leaf.note:
                    lines.append(f"{leaf.path}: {leaf.note}")
                continue
            if leaf.worst:  # why is in the reasons above; here: where
                ad = f", {leaf.autodiff} mode" if self.autodiff == "both" else ""
                lines.append(f"worst entries of {leaf.path} ({leaf.status}{ad}):")
                lines.extend(f"  {w.describe()}" for w in leaf.worst)
        if self.skipped:
            lines.append("not checked (not floating point): " + ", ".join(self.skipped))
        if self.projections:
            lines.append(
                f"output checked through {len(self.projections)} random cotangents v_j: "
                "each leaf compares the gradient of <v_j, f(θ)>; see report.projections"
            )
        if self.promoted:
            lines.append("promoted to float64 inside f for the check: " + "; ".join(self.promoted))
        lines.extend(f"note: {n}" for n in self.notes)
        return lines

    def __rich_console__(self, console: Console, options: Any) -> Any:
        yield f"[bold {'green' if self.ok else 'red'}]{self.summary()}[/]"
        yield self.table()
        yield from self._details()

    def __str__(self) -> str:
        buf = io.StringIO()
        # wide enough that no column is cut, whatever the terminal (pytest, logs, files)
        console = Console(file=buf, width=250, color_system=None, force_terminal=False)
        console.print(self.summary(), markup=False, highlight=False, soft_wrap=True)
        console.print(self.table())
        for line in self._details():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return buf.getvalue().rstrip()

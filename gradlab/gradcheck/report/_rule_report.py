"""What ``gradlab.check_rule`` reports: three derivatives compared per argument.

Each row names the culprit (the rule, autodiff through the primal, finite differences, or
none) and the relative errors between the three.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Literal

import jax
import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

__all__ = ["Culprit", "RuleEntry", "RuleReport", "RuleRow"]


Culprit = Literal["none", "rule", "autodiff", "finite_differences", "all", "unresolved"]


#: Culprits under which the rule itself is not in doubt.
_RULE_OK: tuple[Culprit, ...] = ("none", "autodiff")


#: Order in which a report's overall culprit is chosen from its rows' culprits.
_SEVERITY: tuple[Culprit, ...] = (
    "rule",
    "all",
    "finite_differences",
    "unresolved",
    "autodiff",
    "none",
)


@dataclasses.dataclass(frozen=True)
class RuleEntry:
    """One entry of an argument where the three derivatives differ most.

    Attributes:
        index: The entry's index in the argument.
        part: ``"real"``/``"imag"`` for complex arguments, a cotangent label, or ``""``.
        rule: The rule's derivative.
        autodiff: Autodiff through the primal (None when it failed).
        numerical: The centered difference.
        kink: The entry sits at a confirmed kink (checked against its one-sided slopes).
    """

    index: tuple[int, ...]
    part: str
    rule: float
    autodiff: float | None
    numerical: float
    kink: bool


@dataclasses.dataclass(frozen=True)
class RuleRow:
    """The three-way comparison for one differentiated argument (one leaf of it).

    Attributes:
        path: The leaf's path: the argument's parameter name (``arg{i}`` where it cannot be
            read) plus the path inside the argument.
        shape: Its shape.
        rule_vs_autodiff: Relative error between the rule and autodiff through the primal
            (None when autodiff through the primal failed).
        rule_vs_fd: Relative error between the rule and the finite differences.
        autodiff_vs_fd: Relative error between autodiff and the finite differences.
        noise_floor: The relative error rounding alone can put into the finite differences.
        n_kinks: Entries at kinks confirmed at a second step ``eps/10``: each derivative there
            is compared with the interval of its one-sided slopes, not with one difference.
        culprit: Which of the three disagrees (``"none"`` when all agree).
        message: The verdict in words.
        worst: The entries with the largest disagreement, largest first.
    """

    path: str
    shape: tuple[int, ...]
    rule_vs_autodiff: float | None
    rule_vs_fd: float
    autodiff_vs_fd: float | None
    noise_floor: float
    n_kinks: int
    culprit: Culprit
    message: str
    worst: tuple[RuleEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this row."""
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["worst"] = [{**dataclasses.asdict(w), "index": list(w.index)} for w in self.worst]
        return d


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return "0" if x == 0 else f"{x:.2e}"


@dataclasses.dataclass(frozen=True)
class RuleReport:
    """The result of :func:`gradlab.check_rule`; ``str(report)`` is a table.

    Attributes:
        ok: True when the rule is not in doubt: all three agree, or only autodiff through
            the primal disagrees (or fails) while the rule matches finite differences.
        culprit: The most serious row culprit: ``"rule"``, ``"all"``,
            ``"finite_differences"``, ``"unresolved"``, ``"autodiff"`` or ``"none"``.
        message: The overall verdict in words.
        kind: ``"custom_vjp"``, ``"custom_jvp"`` or ``"function"`` (an explicit primal).
        rows: One :class:`RuleRow` per differentiated leaf.
        eps: The finite-difference step.
        tolerance: The relative error below which two derivatives agree.
        output: ``"scalar"``, or the output's shape and the cotangents it was projected on.
        projections: The random cotangents (NumPy pytrees) for a non-scalar output.
        autodiff_error: Why autodiff through the primal failed, when it did.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab
        >>> @jax.custom_vjp
        ... def softplus(x):
        ...     return jnp.logaddexp(x, 0.0)
        >>> softplus.defvjp(lambda x: (softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))
        >>> report = gradlab.check_rule(softplus, jnp.array([-1.0, 0.5, 2.0]))
        >>> report.ok, report.culprit, report["x"].culprit
        (True, 'none', 'none')
    """

    ok: bool
    culprit: Culprit
    message: str
    kind: str
    rows: tuple[RuleRow, ...]
    eps: float
    tolerance: float
    output: str
    projections: tuple[Any, ...] = ()
    autodiff_error: str = ""

    def __getitem__(self, path: str) -> RuleRow:
        """The row of the leaf at ``path``."""
        for row in self.rows:
            if row.path == path:
                return row
        raise KeyError(f"no row {path!r}; the rows are: {', '.join(r.path for r in self.rows)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the whole report."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["rows"] = [row.to_dict() for row in self.rows]
        d["projections"] = [
            jax.tree_util.tree_map(lambda v: np.asarray(v).tolist(), c) for c in self.projections
        ]
        return d

    def table(self) -> Table:
        """The per-argument table as a :class:`rich.table.Table`."""
        table = Table(
            box=box.SIMPLE_HEAD,
            caption=f"{self.kind}  eps={self.eps:g}  tolerance={self.tolerance:g}  "
            f"output={self.output}",
            caption_justify="left",
        )
        for name in ("argument", "shape", "rule~autodiff", "rule~FD", "autodiff~FD", "noise"):
            table.add_column(name, justify="left" if name in ("argument", "shape") else "right")
        table.add_column("culprit")
        for row in self.rows:
            table.add_row(
                row.path,
                str(row.shape),
                _fmt(row.rule_vs_autodiff),
                _fmt(row.rule_vs_fd),
                _fmt(row.autodiff_vs_fd),
                _fmt(row.noise_floor),
                row.culprit,
            )
        return table

    def __str__(self) -> str:
        buf = io.StringIO()
        console = Console(file=buf, width=120, color_system=None, force_terminal=False)
        head = "OK" if self.ok else "FAILED"
        console.print(f"gradlab.check_rule {head}: {self.message}", markup=False, soft_wrap=True)
        console.print(self.table())
        for row in self.rows:
            if row.culprit == "none":
                continue
            console.print(f"{row.path}: {row.message}", markup=False, soft_wrap=True)
            for w in row.worst:
                part = f" {w.part}" if w.part else ""
                console.print(
                    f"  {w.index}{part}: rule {w.rule:+.10e}  autodiff "
                    f"{'failed' if w.autodiff is None else f'{w.autodiff:+.10e}'}  "
                    f"FD {w.numerical:+.10e}{'  [kink]' if w.kink else ''}",
                    markup=False,
                    soft_wrap=True,
                )
        if self.autodiff_error:
            console.print(
                f"autodiff through the primal failed: {self.autodiff_error}", markup=False
            )
        return buf.getvalue().rstrip()

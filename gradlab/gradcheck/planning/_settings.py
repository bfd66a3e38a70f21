"""The checker's settings objects: which entries to move, how to judge, where to run.

Each is a small frozen dataclass validated when built, so that a wrong setting fails where it
is written, with a message that says what to pass instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeAlias

import jax

from gradlab._errors import CheckInputError
from gradlab._validate import boolean, integer, positive_number
from gradlab.gradcheck.programs._cache import resolve_enabled

__all__ = ["Criteria", "Directional", "Entries", "Execution", "Full", "Sample"]


def _positive_int(owner: str, name: str, value: Any) -> None:
    integer(f"{owner}: {name}", value, exact=True, error=CheckInputError)


def _positive_number(owner: str, name: str, value: Any) -> None:
    positive_number(f"{owner}: {name}", value, error=CheckInputError)


def _bool(owner: str, name: str, value: Any) -> None:
    boolean(f"{owner}: {name}", value, error=CheckInputError)


@dataclasses.dataclass(frozen=True)
class Full:
    """Move every entry of every leaf: the lecture's check, and the default.

    Example:
        >>> import jax.numpy as jnp
        >>> import gradlab
        >>> gradlab.check(lambda w: jnp.sum(w**3), jnp.ones(4), entries=gradlab.Full()).n_entries
        4
    """


@dataclasses.dataclass(frozen=True)
class Sample:
    """Move ``per_leaf`` entries of each leaf, drawn uniformly without replacement.

    For models too big for a full check: every leaf is still checked, on a random sample of
    its entries (all of them when the leaf has fewer). The draw depends on ``check``'s
    ``seed``.

    Attributes:
        per_leaf: Entries moved per leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> import gradlab
        >>> report = gradlab.check(lambda w: jnp.sum(jnp.sin(w)), jnp.ones(1000),
        ...                        entries=gradlab.Sample(16))
        >>> report.ok, report.entries
        (True, 'sample (16 entries per leaf, uniform without replacement, seed 0)')
    """

    per_leaf: int = 64

    def __post_init__(self) -> None:
        _positive_int("Sample", "per_leaf", self.per_leaf)


@dataclasses.dataclass(frozen=True)
class Directional:
    """Move each leaf along ``directions`` random unit directions (a screen, not a proof).

    One pair of evaluations per direction compares the directional derivative
    ``(f(θ + h·d) − f(θ − h·d)) / 2h`` with ``<∇f, d>``: a wrong entry anywhere in the leaf
    shows in almost every direction, at the cost of a few evaluations whatever the leaf's size.
    The directions depend on ``check``'s ``seed``.

    Attributes:
        directions: Random unit directions per leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> import gradlab
        >>> report = gradlab.check(lambda w: jnp.sum(jnp.tanh(w)), jnp.ones((300, 300)),
        ...                        entries=gradlab.Directional(4))
        >>> report.ok, report.entries
        (True, 'directional (4 random unit directions per leaf, seed 0)')
    """

    directions: int = 4

    def __post_init__(self) -> None:
        _positive_int("Directional", "directions", self.directions)


#: Which entries a check moves: :class:`Full`, :class:`Sample` or :class:`Directional`.
Entries: TypeAlias = Full | Sample | Directional


@dataclasses.dataclass(frozen=True)
class Criteria:
    """How entries are judged beyond the tolerance, and how many are shown.

    Attributes:
        kink_tolerance: Relative disagreement of the two one-sided differences that marks an
            entry as a kink candidate (then confirmed at a second step and checked as a
            subgradient).
        noise_factor: ``c`` in the rounding model ``|error of f| ≈ c·u·|f|`` that sets each
            leaf's noise floor.
        worst_entries: How many of the worst entries each leaf's row keeps.

    Example:
        >>> import gradlab
        >>> gradlab.Criteria(worst_entries=10).kink_tolerance
        0.0001
    """

    kink_tolerance: float = 1e-4
    noise_factor: float = 8.0
    worst_entries: int = 5

    def __post_init__(self) -> None:
        _positive_number("Criteria", "kink_tolerance", self.kink_tolerance)
        _positive_number("Criteria", "noise_factor", self.noise_factor)
        if not isinstance(self.worst_entries, int) or self.worst_entries < 0:
            raise CheckInputError(
                f"Criteria: worst_entries must be a non-negative int, got {self.worst_entries!r}."
            )


@dataclasses.dataclass(frozen=True)
class Execution:
    """Where and how a check runs; none of it changes the result.

    Attributes:
        devices: Devices (or one device) to shard the perturbations over, and to evaluate
            ``f`` on; default: the first local device, or every device of every process under
            ``jax.distributed``. ``jax.devices("cpu")`` checks in float64 on the host when the
            accelerator has no float64.
        memory_budget: Bytes one compiled batch may use per device; default: from the
            device's memory. Give this or ``chunk_size``, not both.
        chunk_size: Perturbations per compiled batch (each costs two evaluations of ``f``);
            default: from the memory budget.
        slices: Carry each entry's move through ``f`` as the slice of values it changes (a
            column of ``x @ W``, one output channel of a convolution) instead of evaluating
            ``f`` on the whole moved ``θ``: the same differences, several times less work.
        progress: Show the plan and a progress bar; default: only on a terminal and for checks
            expected to take more than a few seconds.
        verbose: Print the plan, the time estimate from the first chunk and the summary to
            standard error.
        compilation_cache: Keep the check's compiled programs on disk so that the next
            process (the next pytest run) loads them instead of compiling; default on (off
            with ``GRADLAB_COMPILATION_CACHE=0``), in the user's cache folder or in the cache
            configured for JAX. JAX's settings are restored afterwards.
        max_seconds: The longest a check may be expected to take. Before its sweep is
            compiled, its time is estimated from one timed run of ``f`` and its gradient at
            θ and the FLOPs of the sweep's kernels (traced, not compiled); a check estimated
            far over the limit (4×) stops there. Then the first batch of differences is
            timed, and a check expected to take longer than the limit stops there. Either
            way with a :class:`~gradlab.CheckInputError` that gives the estimate and the
            cheaper ``Sample(n)`` / ``Directional(k)`` checks. ``None``: no limit (go on
            however long it takes).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab
        >>> on_host = gradlab.Execution(devices=jax.devices("cpu"), chunk_size=2)
        >>> gradlab.check(lambda w: jnp.sum(w**2), jnp.ones(5), execution=on_host).ok
        True
    """

    devices: Sequence[jax.Device] | None = None
    memory_budget: int | None = None
    chunk_size: int | None = None
    slices: bool = True
    progress: bool | None = None
    verbose: bool = False
    compilation_cache: bool | None = None
    max_seconds: float | None = 60.0

    def __post_init__(self) -> None:
        if self.devices is not None:
            one = isinstance(self.devices, jax.Device)
            try:
                devices = (self.devices,) if one else tuple(self.devices)
            except TypeError:
                devices = ()
            if not devices or not all(isinstance(d, jax.Device) for d in devices):
                raise CheckInputError(
                    f"Execution: devices must be a non-empty sequence of jax devices (e.g. "
                    f"jax.devices()), got {self.devices!r}."
                )
            object.__setattr__(self, "devices", devices)
        if self.memory_budget is not None:
            _positive_int("Execution", "memory_budget", self.memory_budget)
        if self.chunk_size is not None:
            _positive_int("Execution", "chunk_size", self.chunk_size)
            if self.memory_budget is not None:
                raise CheckInputError(
                    "Execution: chunk_size fixes the batch, memory_budget sizes it; give one of "
                    "the two."
                )
        for name in ("slices", "verbose"):
            _bool("Execution", name, getattr(self, name))
        if self.progress is not None:
            _bool("Execution", "progress", self.progress)
        if self.max_seconds is not None:
            _positive_number("Execution", "max_seconds", self.max_seconds)
        try:
            resolve_enabled(self.compilation_cache)
        except ValueError as e:
            raise CheckInputError(f"Execution: {e}") from e

"""The checker's options as one validated, frozen object (defaults set once, here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab._errors import CheckInputError
from gradlab._validate import integer, positive_number
from gradlab.gradcheck.planning._settings import (
    Criteria,
    Directional,
    Entries,
    Execution,
    Full,
    Sample,
)
from gradlab.gradcheck.programs._cache import resolve_enabled

__all__ = ["MODES", "CheckOptions", "build_options", "dtype_name"]

MODES = ("full", "sample", "directional")


def _positive_int(name: str, value: Any, what: str) -> None:
    integer(f"{name} ({what})", value, exact=True, error=CheckInputError)


def _positive_number(name: str, value: Any) -> None:
    positive_number(name, value, error=CheckInputError)


@dataclasses.dataclass(frozen=True)
class CheckOptions:
    """The pipeline's flat options, built from :func:`gradlab.check`'s settings and validated.

    Example:
        >>> CheckOptions(mode="sample", samples=32).samples
        32
        >>> CheckOptions(eps=2.0)
        Traceback (most recent call last):
        ...
        gradlab.CheckInputError: eps=2.0 is not a small step; ...
    """

    argnums: int | tuple[int, ...] = 0
    eps: float | str | None = None
    tolerance: float | None = None
    has_aux: bool = False
    mode: str = "full"
    samples: int = 64
    directions: int = 4
    seed: int = 0
    ad: str | None = None
    order: int = 1
    cotangents: int = 3
    dtype: str | None = None
    kink_tolerance: float = 1e-4
    noise_factor: float = 8.0
    repeat: bool = False
    sparse: bool = True
    chunk_size: int | None = None
    memory_budget: int | None = None
    devices: Sequence[jax.Device] | None = None
    max_worst: int = 5
    progress: bool | None = None
    verbose: bool = False
    compilation_cache: bool | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        try:
            resolve_enabled(self.compilation_cache)
        except ValueError as e:
            raise CheckInputError(str(e)) from e
        self._steps()
        self._numbers()
        self._modes()
        public = {"repeat": "check_determinism", "sparse": "Execution.slices"}
        for name in ("has_aux", "repeat", "sparse", "verbose"):
            if not isinstance(getattr(self, name), bool):
                raise CheckInputError(
                    f"{public.get(name, name)} must be True or False, got {getattr(self, name)!r}."
                )

    def _steps(self) -> None:
        eps = self.eps
        if isinstance(eps, str):
            if eps != "auto":
                raise CheckInputError(f"eps must be a number, 'auto' or None, got {eps!r}.")
        elif eps is not None:
            _positive_number("eps", eps)
            if eps >= 1.0:
                raise CheckInputError(
                    f"eps={eps!r} is not a small step; centered differences need eps << 1 "
                    "(the lecture uses 1e-7)."
                )

    def _numbers(self) -> None:
        if self.tolerance is not None:
            _positive_number("tolerance", self.tolerance)
        _positive_number("kink_tolerance", self.kink_tolerance)
        _positive_number("noise_factor", self.noise_factor)
        if not isinstance(self.max_worst, int) or self.max_worst < 0:
            raise CheckInputError(f"max_worst must be a non-negative int, got {self.max_worst!r}.")
        if self.chunk_size is not None and (
            not isinstance(self.chunk_size, int) or self.chunk_size < 1
        ):
            raise CheckInputError(
                f"chunk_size must be a positive int or None, got {self.chunk_size!r}."
            )
        if self.memory_budget is not None:
            _positive_int("memory_budget", self.memory_budget, "bytes per device")
        if self.max_seconds is not None:
            _positive_number("max_seconds", self.max_seconds)

    def _modes(self) -> None:
        if self.dtype not in (None, "float64", "float32"):
            raise CheckInputError(
                f"dtype must be None, 'float64' or 'float32', got {self.dtype!r}."
            )
        if self.mode not in MODES:
            raise CheckInputError(
                f"mode must be one of {', '.join(map(repr, MODES))}, got {self.mode!r}."
            )
        _positive_int("samples", self.samples, "entries per leaf in 'sample' mode")
        _positive_int("directions", self.directions, "random directions per leaf in 'directional'")
        _positive_int("projections", self.cotangents, "random projections of a non-scalar output")
        if self.order not in (1, 2) or isinstance(self.order, bool):
            raise CheckInputError(
                f"order must be 1 (gradients) or 2 (Hessian-vector products), got {self.order!r}."
            )
        if self.order == 2 and self.repeat:
            raise CheckInputError("repeat=True is implemented for order=1; drop it at order=2.")


def dtype_name(dtype: Any) -> str | None:
    """The check's dtype as a name, from anything ``jnp.dtype`` accepts (None: the default).

    Example:
        >>> import jax.numpy as jnp
        >>> dtype_name(jnp.float32), dtype_name("float64"), dtype_name(np.float32), dtype_name(None)
        ('float32', 'float64', 'float32', None)
        >>> dtype_name(jnp.bfloat16)
        Traceback (most recent call last):
        ...
        gradlab.CheckInputError: dtype=bfloat16: a check runs in float64 or float32; ...
    """
    if dtype is None:
        return None
    try:
        name = np.dtype(jnp.dtype(dtype)).name
    except (TypeError, ValueError) as e:
        raise CheckInputError(
            f"dtype must be None, float64 or float32 (anything jnp.dtype reads as one, e.g. "
            f"jnp.float32 or 'float32'), got {dtype!r}."
        ) from e
    if name not in ("float64", "float32"):
        raise CheckInputError(
            f"dtype={name}: a check runs in float64 or float32; leave dtype out (float64 where "
            "the device has it). Parameters in other dtypes are checked in float64 and their "
            "own dtype is audited."
        )
    return name


def build_options(
    *,
    order: int,
    argnums: int | Sequence[int],
    has_aux: bool,
    entries: Entries,
    eps: float | str | None,
    tolerance: float | None,
    autodiff: str,
    dtype: Any,
    projections: int,
    seed: int,
    check_determinism: bool,
    criteria: Criteria,
    execution: Execution,
) -> CheckOptions:
    """The public settings as the pipeline's one flat, validated options object."""
    if not isinstance(entries, Full | Sample | Directional):
        raise CheckInputError(
            "entries must be gradlab.Full(), gradlab.Sample(per_leaf) or "
            f"gradlab.Directional(directions), got {entries!r}."
        )
    for name, value, kind in (
        ("criteria", criteria, Criteria),
        ("execution", execution, Execution),
    ):
        if not isinstance(value, kind):
            raise CheckInputError(f"{name} must be a gradlab.{kind.__name__}(...), got {value!r}.")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise CheckInputError(f"seed must be an int, got {seed!r}.")
    dtype = dtype_name(dtype)
    mode = {Full: "full", Sample: "sample", Directional: "directional"}[type(entries)]
    return CheckOptions(
        argnums=argnums if isinstance(argnums, int) else tuple(argnums),
        eps=eps,
        tolerance=tolerance,
        has_aux=has_aux,
        mode=mode,
        samples=entries.per_leaf if isinstance(entries, Sample) else 64,
        directions=entries.directions if isinstance(entries, Directional) else 4,
        seed=seed,
        ad=autodiff,
        order=order,
        cotangents=projections,
        dtype=dtype,
        kink_tolerance=criteria.kink_tolerance,
        noise_factor=criteria.noise_factor,
        max_worst=criteria.worst_entries,
        repeat=check_determinism,
        sparse=execution.slices,
        chunk_size=execution.chunk_size,
        memory_budget=execution.memory_budget,
        devices=execution.devices,
        progress=execution.progress,
        verbose=execution.verbose,
        compilation_cache=execution.compilation_cache,
        max_seconds=execution.max_seconds,
    )

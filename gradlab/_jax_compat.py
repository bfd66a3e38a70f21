"""Every use of JAX's private or experimental APIs, in one place, the same on every JAX.

gradlab reaches past JAX's public API in a few places: it walks jaxprs (the checker's
promotion, the diagnosis), registers its own in-process cache with ``jax.clear_caches``, scopes
the persistent compilation cache's settings, names the user's source line of an equation, and
keeps compiled programs on disk. Those APIs can move in any JAX release; importing them only
here means a move breaks one module, and ``tests/jax_compat/test_jax_compat.py`` (run on the
oldest and the newest supported JAX) says which.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jaxlib
import numpy as np
from jax._src import compilation_cache as _compilation_cache
from jax._src import config as _config
from jax._src import core as _core
from jax._src import dtypes as _dtypes
from jax._src import linear_util as _lu
from jax._src import source_info_util as _source_info_util
from jax._src import util as _util
from jax._src.state import types as _state_types
from jax.experimental import serialize_executable as _serialize_executable

__all__ = [
    "AbstractValue",
    "CacheSettings",
    "cache_settings",
    "canonical_dtype_of",
    "deserialize_executable",
    "is_flat_tree",
    "keeps_programs_quietly",
    "map_jvp_rule",
    "only_local_ref_effects",
    "register_cache",
    "reset_compilation_cache",
    "scan_counts",
    "serialize_executable",
    "user_frame",
    "x64_enabled",
]

#: The base class of JAX's abstract values (``ShapedArray``, ...), not in ``jax.extend``.
AbstractValue: type = _core.AbstractValue


def x64_enabled() -> bool:
    """Whether float64 is on where this is called (a scoped ``jax.enable_x64`` included)."""
    return bool(_config.enable_x64.value)


def canonical_dtype_of(array: Any) -> Any:
    """The dtype JAX's conversion of a NumPy ``array`` has now (its cache of conversions included).

    JAX caches the conversion of NumPy constants without the x64 setting in its key: an
    array first converted inside ``jax.enable_x64(True)`` can stay float64 afterwards.

    Example:
        >>> import numpy as np
        >>> str(canonical_dtype_of(np.ones(2, np.float32)))
        'float32'
    """
    with np.errstate(all="ignore"):  # JAX >= 0.12 converts the values: only the dtype counts
        return _dtypes.canonicalize_value(array).dtype


def is_flat_tree(value: Any) -> bool:
    """Whether ``value`` is one of JAX's flat trees (``scan``'s ``ft_in`` from JAX 0.11 on).

    Its ``repr`` writes its whole structure, and its leaves are in ``value.vals``.

    Example:
        >>> is_flat_tree((1, 2))
        False
    """
    return (getattr(type(value), "__module__", "") or "").startswith("jax._src.flattree")


def only_local_ref_effects(effects: Any) -> bool:
    """Whether every effect is on a reference local to a kernel (a Pallas body's reads, writes)."""
    return all(isinstance(e, _state_types.RefEffect) for e in effects)


def scan_counts(params: dict[str, Any]) -> tuple[int, int]:
    """How many of a ``scan``'s inputs are constants and how many are carries.

    The inputs are the constants, then the carries, then the scanned arrays. JAX 0.11
    replaced the ``num_consts``/``num_carry`` parameters by ``ft_in``, a flat tree of those
    three groups whose lengths count their leaves.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda a, xs: jax.lax.scan(lambda h, x: (a * h + x, h), 0.0, xs)
        >>> eqn = jax.make_jaxpr(f)(1.0, jnp.ones(3)).jaxpr.eqns[-1]
        >>> scan_counts(eqn.params)
        (1, 1)
    """
    if "ft_in" in params:
        consts, carry, _ = params["ft_in"].unpack()
        return len(consts), len(carry)
    return int(params["num_consts"]), int(params["num_carry"])


def register_cache(cache: Any, name: str) -> None:
    """Registers ``cache`` (an object with ``cache_clear()``) with ``jax.clear_caches()``.

    Args:
        cache: Anything with a ``cache_clear()`` method; JAX keeps a reference to it.
        name: What the cache holds (JAX shows it when debugging its caches).
    """
    _util.register_cache(cache, name)


def user_frame(traceback: Any) -> Any:
    """The innermost frame of ``traceback`` outside JAX (``file_name``, ``start_line``), or None.

    Args:
        traceback: An equation's ``eqn.source_info.traceback``.
    """
    return _source_info_util.user_frame(traceback)


class CacheSettings(NamedTuple):
    """JAX's persistent compilation cache settings, as scoped states.

    Each field is one of JAX's config states: ``.value`` reads it, ``.get_global()`` the
    process-wide value, ``.name`` is what ``jax.config.update`` takes, and calling it with a
    value gives a context manager that sets it in the current thread.
    """

    enabled: Any
    directory: Any
    min_compile_time_secs: Any
    min_entry_size_bytes: Any


def cache_settings() -> CacheSettings:
    """JAX's persistent compilation cache settings (see :class:`CacheSettings`).

    Example:
        >>> import jax
        >>> cache_settings().directory.value == jax.config.jax_compilation_cache_dir
        True
    """
    return CacheSettings(
        enabled=_config.enable_compilation_cache,
        directory=_config.compilation_cache_dir,
        min_compile_time_secs=_config.persistent_cache_min_compile_time_secs,
        min_entry_size_bytes=_config.persistent_cache_min_entry_size_bytes,
    )


def reset_compilation_cache() -> None:
    """Makes JAX forget its persistent cache object; the next compile reads the settings anew."""
    _compilation_cache.reset_cache()


def serialize_executable(compiled: jax.stages.Compiled) -> tuple[bytes, Any, Any]:
    """A compiled program as ``(payload, in_tree, out_tree)``; raises if it cannot be kept.

    A program that takes constants hoisted out of the traced function (JAX passes a large
    closed-over array as a hidden argument) is not kept, on any JAX: before 0.11 JAX refuses
    it, and from 0.11 it pickles the constants as NumPy arrays, so a loaded program called
    without x64 narrows a float64 constant and refuses its own call (seen on 0.12.1). Such
    constants are also the caller's data, which has no business on disk.
    """
    hoisted = getattr(getattr(compiled, "_params", None), "const_args", None)
    if hoisted:
        raise ValueError(f"a program with {len(hoisted)} hoisted constant(s) is not kept")
    payload, in_tree, out_tree = _serialize_executable.serialize(compiled)
    return payload, in_tree, out_tree


# jaxlib 0.10.0 and 0.10.1 list XLA:CPU's tuning flags (+prefer-no-gather, +prefer-no-scatter)
# among a kept program's target features, then report at every load, on stderr, that the very
# machine which compiled it lacks them ("execution errors such as SIGILL"). 0.10.2 is quiet.
_QUIET_CPU_LOADS = (0, 10, 2)


def keeps_programs_quietly(device: Any) -> bool:
    """Whether a program kept by :func:`serialize_executable` loads on ``device`` without noise.

    False on XLA:CPU before jaxlib 0.10.2, which logs a false machine mismatch at each load:
    gradlab then keeps no programs on disk there rather than fill the caller's stderr.
    """
    if device.platform != "cpu":
        return True
    numbers = re.findall(r"\d+", jaxlib.__version__)[:3]
    return tuple(int(n) for n in numbers) >= _QUIET_CPU_LOADS


def deserialize_executable(
    payload: bytes, in_tree: Any, out_tree: Any, device: Any, devices: Sequence[Any]
) -> jax.stages.Compiled:
    """Loads a program kept by :func:`serialize_executable` onto ``device``'s client.

    Loading runs code from ``payload``: only pass what this process's user wrote and can
    vouch for (gradlab checks a digest and the folder's owner before it gets here).
    """
    return _serialize_executable.deserialize_and_load(
        payload, in_tree, out_tree, backend=device.client, execution_devices=list(devices)
    )


def map_jvp_rule(jvp_jaxpr_fun: Any, transform: Callable[[Any, list[Any]], Any]) -> Any:
    """A ``custom_jvp_call``'s rule parameter with each jaxpr it gives passed through ``transform``.

    ``jvp_jaxpr_fun`` is called with the tangents' symbolic-zero pattern and returns the rule
    traced as ``(jaxpr, consts, out_zeros)``; ``transform(jaxpr, consts)`` returns the
    ``(jaxpr, consts)`` to use instead (the same arguments and outputs, e.g. promoted to
    float64). The same contract from JAX 0.10 to 0.12.
    """

    def rule(*zeros: Any) -> tuple[Any, Any, Any]:
        jaxpr, consts, out_zeros = jvp_jaxpr_fun.call_wrapped(*zeros)
        new, new_consts = transform(jaxpr, list(consts))
        return new, new_consts, out_zeros

    return _lu.wrap_init(rule, debug_info=jvp_jaxpr_fun.debug_info)

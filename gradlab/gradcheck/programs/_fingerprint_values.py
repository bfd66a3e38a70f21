"""What a fingerprint reads of a value in a jaxpr: arrays, dtypes, avals, data, policies."""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import numpy as np

from gradlab import _jax_compat

#: Remat policies that are plain functions of JAX's own (their name says all they do).
_POLICY_MODULES = ("jax._src.ad_checkpoint", "jax.ad_checkpoint", "jax.checkpoint_policies")


def _array(h: Any, x: Any) -> None:
    a = np.asarray(x)
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())


def _local(effects: Any) -> bool:
    """Only effects on references local to a kernel (a Pallas body's reads and writes)."""
    return _jax_compat.only_local_ref_effects(effects)


def _is_jax_dtype(value: Any) -> bool:
    try:
        return bool(jax.dtypes.issubdtype(value, jax.dtypes.extended))
    except Exception:
        return False


def _is_aval(value: Any) -> bool:
    return isinstance(value, _jax_compat.AbstractValue)


def _is_frozendict(value: Any) -> bool:
    return type(value).__name__ in ("FrozenDict", "frozendict") and hasattr(value, "items")


#: Types whose ``repr`` shows all of their content (shardings, meshes, specs of JAX's own).
_DATA_TYPES = (
    "PartitionSpec",
    "UnspecifiedValue",
    "AUTO",
    "SingleDeviceSharding",
    "NamedSharding",
    "Mesh",
    "AbstractMesh",
    "DeviceLocalLayout",
    "Layout",
    "Format",
    "Device",
    "CpuDevice",
    "GpuDevice",
    "TpuDevice",
    "ShapeDtypeStruct",
    "slice",
    "ellipsis",
)


def _is_data(value: Any) -> bool:
    t = type(value)
    module = getattr(t, "__module__", "") or ""
    own = module.startswith(("jax", "jaxlib", "builtins"))
    return own and t.__name__ in _DATA_TYPES


def _is_jax_policy(value: Any) -> bool:
    module = getattr(value, "__module__", "") or ""
    qualname = getattr(value, "__qualname__", "") or ""
    return module.startswith(_POLICY_MODULES) and "<locals>" not in qualname


def _name(fn: Any) -> str:
    inner = getattr(fn, "f", fn)  # lu.WrappedFun wraps the function in .f
    with contextlib.suppress(Exception):
        return f"{getattr(inner, '__module__', '')}.{getattr(inner, '__qualname__', type(fn))}"
    return type(fn).__qualname__

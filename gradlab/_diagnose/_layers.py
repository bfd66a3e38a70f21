"""From raw measurements to layers (along depth) and recurrences (along time).

Main-path sites, expanded per iteration of scans over layers, cut the depth into layers: layer
``l`` runs from its input site to the next main-path site (or the output site), and holds the
branch sites in between (a residual block). Its numbers are means of ``log10`` norms over
initialisations and batches (geometric means of the norms).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from gradlab._diagnose._measure import Measured
from gradlab._diagnose._program import Kernel, Site
from gradlab._treepath import path_parts


@dataclasses.dataclass
class Layer:
    """One layer (or residual block) along the depth of the model.

    Attributes:
        index: position along the data flow, from 0.
        name: the module (params path or Flax name stack), with ``[i]`` for a scan step.
        grad_out: ``log10 ‖∂L/∂h‖`` at the layer's output (nan if not measured).
        grad_in: ``log10 ‖∂L/∂h‖`` at the layer's input.
        gain: ``grad_in − grad_out``: log10 of how much the gradient grows going back through
            the layer.
        h_out: ``log10 ‖h‖`` at the output (nan if not measured).
        grad_w: ``log10`` of the norm of the gradient of the layer's kernels.
        activation: the activation after the layer's (first) linear map.
        weight_variance: ``σ_w² = mean(W²)·fan_in`` of its (first) kernel.
        bias_variance: ``σ_b² = mean(b²)`` of its bias (0 without one).
        saturation: fraction of saturated tanh/sigmoid units, or of ReLU units inactive on the
            whole batch; None when there is no such activation.
        residual: True for a block with a branch that the main path bypasses.
        kernels: ``(leaf, slice)`` of its kernels in order (``slice`` None for a whole leaf).
        fan_in: fan-in of its (first) kernel.
        kernel_variances: ``σ_w²`` of each of its kernels, in order.
        same_size: its input and output have the same number of entries (its gain can be
            compared with other layers'; a layer that also pools or reshapes cannot).
        input_ms: mean square of the entries of its input (for the mean-field ``q``).

    Example:
        >>> import jax.numpy as jnp
        >>> from gradlab.flow import diagnose
        >>> f = lambda ws, x: jnp.sum(jnp.tanh(jnp.tanh(x @ ws["a"]) @ ws["b"]))
        >>> d = diagnose(f, {"a": jnp.eye(4), "b": jnp.eye(4)}, jnp.ones((2, 4)))
        >>> [(layer.name, layer.activation, layer.fan_in) for layer in d.layers]
        [('a', 'tanh', 4), ('b', 'tanh', 4)]
    """

    index: int
    name: str
    grad_out: float
    grad_in: float
    gain: float
    h_out: float
    grad_w: float
    activation: str
    weight_variance: float | None
    bias_variance: float
    saturation: float | None
    residual: bool
    kernels: list[tuple[int, int | None]]
    fan_in: int
    kernel_variances: list[float]
    same_size: bool
    input_ms: float


@dataclasses.dataclass
class Recurrence:
    """A recurrence through time (a ``scan`` whose weights are shared by every step).

    Attributes:
        name: the recurrent kernel's module.
        grad: ``log10 ‖∂L/∂s_t‖`` per step ``t`` for the carried state ``s`` read by the
            recurrent kernel.
        h: ``log10 ‖s_t‖`` per step.
        forget: ``(mean, std)`` of the forget-gate pre-activations if an LSTM forget gate was
            found, else None.
        forget_units: number of forget units.
        weight_variance: ``σ_w²`` of the recurrent kernel.
        kernel: its params leaf.
        activation: the activation after the recurrent kernel.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.flow import diagnose
        >>> def f(w, xs):  # a tanh RNN over 20 steps, recurrent weights 0.5 I
        ...     step = lambda h, x: (jnp.tanh(h @ w + x),) * 2
        ...     return jnp.sum(jax.lax.scan(step, jnp.zeros((2, 4)), xs)[0])
        >>> d = diagnose(f, jnp.eye(4) / 2, jnp.ones((20, 2, 4)))
        >>> rec = d.recurrences[0]
        >>> len(rec.grad), rec.activation, rec.weight_variance, [fl.kind for fl in d.flags]
        (20, 'tanh', 0.25, ['vanishing'])
    """

    name: str
    grad: np.ndarray
    h: np.ndarray
    forget: tuple[float, float] | None
    forget_units: int
    weight_variance: float | None
    kernel: int
    activation: str


def leaf_name(path: Any) -> str:
    """``params/Dense_0/kernel`` style name of a params path (NNX ``value`` dropped)."""
    return "/".join(path_parts(path))


def module_name(path: Any, kernel: Kernel, stacks: dict[str, set[int]] | None = None) -> str:
    """The layer's name: the module name stack if it names this kernel alone, else its path.

    Flax Linen (and equinox under ``jit``) leave module names in the program's name stack;
    a name stack shared by several kernels (equinox's ``eqx.nn.Linear`` for every layer) does
    not tell them apart, so the params path (``layers/3``) is used instead.
    """
    if kernel.name_stack and (stacks is None or len(stacks.get(kernel.name_stack, ())) == 1):
        return kernel.name_stack
    parts = leaf_name(path).split("/")
    if parts and parts[0] == "params" and len(parts) > 1:
        parts = parts[1:]
    parts = parts[:-1] if len(parts) > 1 else parts
    return "/".join(parts)


def name_stacks(sites: list[Site]) -> dict[str, set[int]]:
    """Which params leaves each name stack reads (to tell whether it names one kernel)."""
    out: dict[str, set[int]] = {}
    for s in sites:
        for k in s.kernels:
            out.setdefault(k.name_stack, set()).add(k.leaf)
    return out


def _mean(a: np.ndarray) -> np.ndarray:
    """Mean over (inits, batches) of the finite samples.

    Where none is finite: ``-inf`` if all are ``-inf`` (an exactly zero norm), else ``+inf``
    (an overflow: ``inf`` or ``nan``).
    """
    finite = np.isfinite(a)
    with np.errstate(all="ignore"), _quiet():
        m = np.nanmean(np.where(finite, a, np.nan), axis=(0, 1))
    zero = np.all(a == -np.inf, axis=(0, 1))
    none = ~np.any(finite, axis=(0, 1))
    return np.where(zero, -np.inf, np.where(none, np.inf, m))


class _quiet:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._w.__exit__(*exc)


def _kernel_slice(m: Measured, k: Kernel, idx: tuple[int, ...]) -> tuple[int, int | None]:
    return (k.leaf, idx[-1] if k.stacked and idx else None)


def _variance(m: Measured, k: Kernel, sl: int | None) -> float:
    w = m.values[k.leaf]  # (inits, ...)
    if sl is not None:
        w = w[:, sl]
    return float(np.mean(np.square(w)) * k.fan_in)


def _bias_variance(m: Measured, k: Kernel, sl: int | None) -> float:
    if k.bias is None:
        return 0.0
    b = m.values[k.bias]
    if sl is not None and b.ndim > 2:
        b = b[:, sl]
    return float(np.mean(np.square(b)))


def _instances(sites: list[Site]) -> list[tuple[int, tuple[int, ...]]]:
    """Depth sites expanded per iteration of their layer scans, iteration-major per group."""
    out: list[tuple[int, tuple[int, ...]]] = []
    i = 0
    while i < len(sites):
        s = sites[i]
        if s.kind == "time":
            i += 1
            continue
        if not s.scans:
            out.append((i, ()))
            i += 1
            continue
        j = i
        while j < len(sites) and sites[j].key[0] == s.key[0] and sites[j].scans == s.scans:
            j += 1
        for idx in np.ndindex(*[n for n, _ in s.scans]):
            out.extend((g, tuple(int(v) for v in idx)) for g in range(i, j))
        i = j
    return out


Instance = tuple[int, tuple[int, ...]]  # (site, scan step)


def build_layers(m: Measured) -> list[Layer]:
    """The layers of the model along depth (see the module docstring)."""
    sites = m.program.sites
    inst = _instances(sites)
    chain = [n for n, (sid, _) in enumerate(inst) if not sites[sid].branch]
    g = {i: _mean(m.raw["g"][i]) for i in m.raw["g"]}
    h = {i: _mean(m.raw["h"][i]) for i in m.raw["h"]} if m.raw["h"] else {}
    layers: list[Layer] = []
    for c, start in enumerate(chain):
        end = chain[c + 1] if c + 1 < len(chain) else len(inst)
        members = inst[start:end]
        if not any(sites[sid].kernels for sid, _ in members):
            continue  # the output site
        nxt = inst[chain[c + 1]] if c + 1 < len(chain) else None
        layers.append(_layer(m, len(layers), members, nxt, g, h))
    return layers


def _layer(
    m: Measured,
    index: int,
    members: list[Instance],
    nxt: Instance | None,
    g: dict[int, np.ndarray],
    h: dict[int, np.ndarray],
) -> Layer:
    """Layer ``index``: from its input site to ``nxt`` (None: not measured), with its branch."""
    sites = m.program.sites
    sid0, idx0 = members[0]
    k0 = sites[sid0].kernels[0]
    slices, variances = [], []
    for sid, idx in members:
        for k in sites[sid].kernels:
            sl = _kernel_slice(m, k, idx)
            if sl not in slices:
                slices.append(sl)
                variances.append(_variance(m, k, sl[1]))
    sl0 = slices[0][1]
    sat = None
    if k0.act_key is not None and k0.activation in ("tanh", "sigmoid", "relu"):
        a = _mean(m.raw["act"][list(m.program.acts).index(k0.act_key)])
        sat = float(a[idx0] if np.ndim(a) else a)
    grad_in = float(g[sid0][idx0])
    grad_out = float(g[nxt[0]][nxt[1]]) if nxt else math.nan
    return Layer(
        index=index,
        name=_layer_name(m, members, sites),
        grad_out=grad_out,
        grad_in=grad_in,
        gain=grad_in - grad_out,
        h_out=float(h[nxt[0]][nxt[1]]) if nxt and nxt[0] in h else math.nan,
        grad_w=_grad_w(m, slices),
        activation=k0.activation,
        weight_variance=variances[0],
        bias_variance=_bias_variance(m, k0, sl0),
        saturation=sat,
        residual=len(members) > 1,
        kernels=slices,
        fan_in=k0.fan_in,
        kernel_variances=variances,
        same_size=nxt is not None
        and math.prod(sites[nxt[0]].shape) == math.prod(sites[sid0].shape),
        input_ms=_mean_square(h, sid0, idx0, sites),
    )


def _mean_square(
    h: dict[int, np.ndarray], sid: int, idx: tuple[int, ...], sites: list[Site]
) -> float:
    if sid not in h:
        return math.nan
    return float(10 ** (2 * float(h[sid][idx])) / max(math.prod(sites[sid].shape), 1))


def _layer_name(m: Measured, members: list[tuple[int, tuple[int, ...]]], sites: list[Site]) -> str:
    names: list[str] = []
    for sid, _ in members:
        for k in sites[sid].kernels:
            n = module_name(m.param_split.paths[k.leaf], k, name_stacks(sites))
            if n not in names:
                names.append(n)
    idx = members[0][1]
    suffix = "".join(f"[{i}]" for i in idx)
    if len(names) > 1:
        prefix = "/".join(_common(names))
        name = (
            f"{prefix}({'+'.join(n[len(prefix) :].lstrip('/') for n in names)})"
            if prefix
            else ("+".join(names))
        )
    else:
        name = names[0]
    return name + suffix


def _common(names: list[str]) -> list[str]:
    parts = [n.split("/") for n in names]
    out = []
    for group in zip(*parts, strict=False):
        if len(set(group)) != 1:
            break
        out.append(group[0])
    return out


def _grad_w(m: Measured, slices: list[tuple[int, int | None]]) -> float:
    sq = 0.0
    for leaf, sl in slices:
        w = m.raw["w"].get(leaf)
        if w is None:
            continue
        v = w if sl is None or w.ndim < 3 else w[..., sl]
        sq += 10 ** (2 * float(_mean(v)))
    return 0.5 * math.log10(sq) if sq > 0 else -math.inf


def build_recurrences(m: Measured) -> list[Recurrence]:
    """Recurrences through time: carried states read by a shared (recurrent) kernel."""
    out = []
    forgets = m.program.forgets
    for sid, s in enumerate(m.program.sites):
        if s.kind != "time" or not s.carry or not s.kernels:
            continue
        k = s.kernels[0]
        fg = [(i, f) for i, f in enumerate(forgets) if f.key[0] == s.key[0]]
        forget, units = None, 0
        if fg:
            stats = m.raw["forget"][fg[0][0]]  # (I, B, T, 3)
            forget = (float(np.mean(stats[..., 0])), float(np.mean(stats[..., 1])))
            units = fg[0][1].units
        out.append(
            Recurrence(
                name=module_name(m.param_split.paths[k.leaf], k, name_stacks(m.program.sites)),
                grad=_mean(m.raw["g"][sid]),
                h=_mean(m.raw["h"][sid]) if sid in m.raw["h"] else np.array([]),
                forget=forget,
                forget_units=units,
                weight_variance=_variance(m, k, None),
                kernel=k.leaf,
                activation=k.activation,
            )
        )
    return out


def leaf_names(m: Measured) -> list[str]:
    """Names of the measured params leaves."""
    return [leaf_name(p) for p in m.param_split.paths]


def weight_grads(m: Measured) -> dict[str, Any]:
    """``log10 ‖∂L/∂θ‖`` per params leaf (a list per layer for leaves sliced per layer).

    Non-finite values (a leaf with an exactly zero gradient) are None, so the dict is JSON.
    """
    names = leaf_names(m)

    def clean(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {names[i]: jax.tree.map(clean, _mean(v).tolist()) for i, v in m.raw["w"].items()}

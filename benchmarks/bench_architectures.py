"""gradlab.check on the architectures researchers check, side by side with the other ways.

Workloads (float64, eps = 1e-7), each with an identical torch twin (the same weights and data;
the two losses agree to 1e-12, asserted):

* ``cnn`` — two 3×3 'SAME' convolutions 3→8→16 with tanh, global average pool, dense to 10
  classes, softmax cross-entropy; 8 images of 16×16 (1,562 parameters).
* ``lstm`` — ``gradlab.nn.LSTM`` (standard cell), 8 inputs, hidden 32, T = 50, batch 4, a
  linear read-out of the last state, squared error (5,281).
* ``transformer`` — one pre-LN transformer block: token embedding by gather (vocab 50, dim
  32), learned positions, 4-head causal self-attention, a 32→128→32 tanh MLP, final LayerNorm,
  next-token cross-entropy; 4 sequences of 16 tokens (16,530).
* ``suite`` — ten small custom layers (70–481 parameters each, 1,606 in all), each checked
  once in turn: a pytest run of ``gradlab.assert_check`` tests.

Methods: ``gradlab.check(f, params, *args)`` with its defaults; the lecture's loop (θ as one
vector, ``J`` jitted once, a Python loop over entries); ``torch.autograd.gradcheck`` slow mode
with 1 and 2 threads; ``jax.test_util.check_grads`` (one random direction, reference only).

Phases: *cold* — a fresh process, first call, compilation included (gradlab with an EMPTY
persistent compilation cache); *cold, cache filled* — another fresh process with the cache
the first one filled (gradlab only: the others keep no cache); *warm* — the second call in
the same process. Imports are not timed (reported apart). Every measurement is a fresh
worker process (``--worker``); ratios (torch 1 thread ÷ gradlab, and the others) are taken
within one run of this script. Past ``--max-entries`` the loop and torch are timed on a random
subsample of entries and extrapolated (marked ``est.``).

gradlab.check is called inside ``gradlab.gradcheck.programs._cache.compilation_cache()``: the same
cache ``gradlab.check`` opens itself once the cache is wired in (nested blocks change
nothing), so the script measures the same thing before and after that wiring.

Run by hand (not in CI); see benchmarks/README.md::

    python benchmarks/bench_architectures.py                    # everything, ~10-20 min
    python benchmarks/bench_architectures.py --workloads cnn,suite --no-torch
    python benchmarks/bench_architectures.py --device gpu       # JAX GPU; torch on CUDA if any
    python benchmarks/bench_architectures.py --markdown         # the JSON's table, as markdown
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import finish_machine_info, machine_info, print_table, write_json

RESULTS = Path(__file__).resolve().parent / "results"
EPS = 1e-7
TWIN_RTOL = 1e-12
METHODS = ("gradlab", "loop", "torch 1 thr", "torch 2 thr", "jax check_grads")
WORKLOAD_NAMES = ("cnn", "lstm", "transformer", "suite")


# --------------------------------------------------------------------------------------------
# The workloads, written once for both array libraries where the operations allow
# --------------------------------------------------------------------------------------------


@dataclass
class Check:
    """One checked function: ``loss(xp, params, *args)`` for ``xp`` in (jax.numpy, torch)."""

    name: str
    params: dict[str, Any]  # numpy float64 arrays (nested dicts allowed)
    args: tuple[np.ndarray, ...]
    loss: Callable[..., Any]  # (xp, params, *args) -> scalar
    jax_loss: Callable[..., Any] | None = None  # (params, *args) if not loss(jnp, ...)


def _swap(xp: Any, a: Any, i: int, j: int) -> Any:
    return a.swapaxes(i, j) if xp.__name__.startswith("jax") else a.transpose(i, j)


def _sigmoid(xp: Any, z: Any) -> Any:
    return 1 / (1 + xp.exp(-z))


def _layer_norm(xp: Any, h: Any, g: Any, b: Any) -> Any:
    mu = h.mean(-1)[..., None]
    var = ((h - mu) ** 2).mean(-1)[..., None]
    return (h - mu) / xp.sqrt(var + 1e-5) * g + b


def _cnn() -> list[Check]:
    rng = np.random.default_rng(0)
    params = {
        "k1": rng.normal(size=(3, 3, 3, 8)) / math.sqrt(27),
        "b1": 0.1 * rng.normal(size=8),
        "k2": rng.normal(size=(3, 3, 8, 16)) / math.sqrt(72),
        "b2": 0.1 * rng.normal(size=16),
        "w": rng.normal(size=(16, 10)) / 4,
        "b": 0.1 * rng.normal(size=10),
    }
    x = rng.normal(size=(8, 16, 16, 3))
    y = np.eye(10)[rng.integers(0, 10, 8)]

    def loss(xp: Any, p: dict[str, Any], x: Any, y: Any) -> Any:
        if xp.__name__.startswith("jax"):
            from jax import lax

            conv = lambda h, k: lax.conv_general_dilated(
                h, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            bias = lambda b: b
            h = x
            pool = lambda h: h.mean((1, 2))
        else:
            f = xp.nn.functional
            conv = lambda h, k: f.conv2d(h, k.permute(3, 2, 0, 1), padding=1)
            bias = lambda b: b[:, None, None]
            h = x.permute(0, 3, 1, 2)
            pool = lambda h: h.mean((2, 3))
        h = xp.tanh(conv(h, p["k1"]) + bias(p["b1"]))
        h = xp.tanh(conv(h, p["k2"]) + bias(p["b2"]))
        z = pool(h) @ p["w"] + p["b"]
        logp = z - xp.log(xp.exp(z).sum(-1))[:, None]
        return -(logp * y).sum(-1).mean()

    return [Check("cnn", params, (x, y), loss)]


def _lstm() -> list[Check]:
    import jax
    from flax import nnx

    from gradlab.nn import LSTM, pure

    hidden, n_in, steps, batch = 32, 8, 50, 4
    with jax.enable_x64(True):
        apply_fn, state = pure(LSTM(n_in, hidden, rngs=nnx.Rngs(0), param_dtype=np.float64))
        lstm = {k: np.asarray(v, np.float64) for k, v in state.to_pure_dict().items()}
    rng = np.random.default_rng(1)
    params = {
        "lstm": lstm,
        "w_out": rng.normal(size=(hidden, 1)) / math.sqrt(hidden),
        "b_out": 0.1 * rng.normal(size=1),
    }
    x, y = rng.normal(size=(batch, steps, n_in)), rng.normal(size=(batch, 1))

    treedef = jax.tree_util.tree_structure(state)  # leaves in key order, like the dict's

    def jax_loss(p: dict[str, Any], x: Any, y: Any) -> Any:
        st = jax.tree_util.tree_unflatten(treedef, jax.tree_util.tree_leaves(p["lstm"]))
        out = apply_fn(st, x)[0]
        return (((out[:, -1] @ p["w_out"] + p["b_out"]) - y) ** 2).mean()

    def loss(xp: Any, p: dict[str, Any], x: Any, y: Any) -> Any:  # the torch twin
        k, r, b = p["lstm"]["kernel"], p["lstm"]["recurrent_kernel"], p["lstm"]["bias"]
        a = c = x[:, 0, :1] @ (0.0 * r[:1, :hidden])  # zeros on x's device (torch: CUDA)
        for t in range(x.shape[1]):
            z = x[:, t] @ k + a @ r + b
            u, f, cand, o = (z[:, i * hidden : (i + 1) * hidden] for i in range(4))
            c = _sigmoid(xp, u) * xp.tanh(cand) + _sigmoid(xp, f) * c
            a = _sigmoid(xp, o) * xp.tanh(c)
        return (((a @ p["w_out"] + p["b_out"]) - y) ** 2).mean()

    return [Check("lstm", params, (x, y), loss, jax_loss)]


def _transformer() -> list[Check]:
    rng = np.random.default_rng(2)
    vocab, dim, heads, steps, batch, hidden = 50, 32, 4, 16, 4, 128
    n = lambda *s: rng.normal(size=s) / math.sqrt(s[0])
    params = {
        "tok": rng.normal(size=(vocab, dim)),
        "pos": 0.1 * rng.normal(size=(steps, dim)),
        "ln1_g": 1 + 0.1 * rng.normal(size=dim), "ln1_b": 0.1 * rng.normal(size=dim),
        "w_qkv": n(dim, 3 * dim), "b_qkv": 0.1 * rng.normal(size=3 * dim),
        "w_o": n(dim, dim), "b_o": 0.1 * rng.normal(size=dim),
        "ln2_g": 1 + 0.1 * rng.normal(size=dim), "ln2_b": 0.1 * rng.normal(size=dim),
        "w_1": n(dim, hidden), "b_1": 0.1 * rng.normal(size=hidden),
        "w_2": n(hidden, dim), "b_2": 0.1 * rng.normal(size=dim),
        "lnf_g": 1 + 0.1 * rng.normal(size=dim), "lnf_b": 0.1 * rng.normal(size=dim),
        "w_u": n(dim, vocab), "b_u": 0.1 * rng.normal(size=vocab),
    }  # fmt: skip
    tokens = rng.integers(0, vocab, size=(batch, steps + 1))
    inputs, targets = tokens[:, :-1], np.eye(vocab)[tokens[:, 1:]]
    mask = np.where(np.tril(np.ones((steps, steps))) > 0, 0.0, -1e9)

    def loss(xp: Any, p: dict[str, Any], inputs: Any, targets: Any, mask: Any) -> Any:
        b, t = inputs.shape
        h = p["tok"][inputs] + p["pos"]
        qkv = _layer_norm(xp, h, p["ln1_g"], p["ln1_b"]) @ p["w_qkv"] + p["b_qkv"]
        split = lambda a: _swap(xp, a.reshape(b, t, heads, dim // heads), 1, 2)
        q, k, v = (split(qkv[..., i * dim : (i + 1) * dim]) for i in range(3))
        scores = q @ _swap(xp, k, -1, -2) / math.sqrt(dim // heads) + mask
        att = xp.exp(scores)
        att = att / att.sum(-1)[..., None]
        o = _swap(xp, att @ v, 1, 2).reshape(b, t, dim)
        h = h + o @ p["w_o"] + p["b_o"]
        m = xp.tanh(_layer_norm(xp, h, p["ln2_g"], p["ln2_b"]) @ p["w_1"] + p["b_1"])
        h = h + m @ p["w_2"] + p["b_2"]
        z = _layer_norm(xp, h, p["lnf_g"], p["lnf_b"]) @ p["w_u"] + p["b_u"]
        logp = z - xp.log(xp.exp(z).sum(-1))[..., None]
        return -(logp * targets).sum(-1).mean()

    return [Check("transformer", params, (inputs, targets, mask), loss)]


def _suite() -> list[Check]:
    """Ten small custom layers, 81–481 parameters each, each with its own little loss."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 6))
    n = lambda *s: rng.normal(size=s) / math.sqrt(s[0])
    b = lambda size: 0.1 * rng.normal(size=size)
    sq = sq_mean
    layers: dict[str, tuple[dict[str, np.ndarray], Callable[..., Any]]] = {
        "dense_tanh": (
            {"w": n(6, 16), "b": 0.1 * rng.normal(size=16)},
            lambda xp, p, x: sq(xp.tanh(x @ p["w"] + p["b"])),
        ),
        "gated_linear_unit": (
            {"wa": n(6, 8), "wb": n(6, 8)},
            lambda xp, p, x: sq((x @ p["wa"]) * _sigmoid(xp, x @ p["wb"])),
        ),
        "projected_layer_norm": (
            {"w": n(6, 32), "g": 1 + 0.1 * rng.normal(size=32), "b": 0.1 * rng.normal(size=32)},
            lambda xp, p, x: (xp.sin(_layer_norm(xp, x @ p["w"], p["g"], p["b"])) ** 3).mean(),
        ),
        "rbf": (
            {"c": rng.normal(size=(10, 6)), "log_width": 0.1 * rng.normal(size=10)},
            lambda xp, p, x: xp.exp(
                -((x[:, None, :] - p["c"]) ** 2).sum(-1) * xp.exp(p["log_width"]) / 6
            ).mean(),
        ),
        "bilinear": (
            {"w": n(6, 24)},
            lambda xp, p, x: sq(xp.tanh(((x @ p["w"]).reshape(8, 6, 4) * x[:, :, None]).sum(1))),
        ),
        "rational_activation": (
            {"w": n(6, 12), "p": rng.normal(size=5) / 3, "q": rng.normal(size=4) / 3},
            lambda xp, p, x: sq(_rational(xp, x @ p["w"], p["p"], p["q"])),
        ),
        "softplus_mlp": (
            {"w1": n(6, 10), "b1": b(10), "w2": n(10, 10)},
            lambda xp, p, x: sq(_softplus(xp, _softplus(xp, x @ p["w1"] + p["b1"]) @ p["w2"])),
        ),
        "attention_pooling": (
            {"w": n(6, 16), "v": n(16)},
            lambda xp, p, x: _attention_pool(xp, x, p),
        ),
        "highway": (
            {"wh": n(6, 6), "bh": b(6), "wt": n(6, 6), "bt": rng.normal(size=6) - 1},
            lambda xp, p, x: sq(_highway(xp, x, p)),
        ),
        "three_layer_mlp": (
            {"w1": n(6, 24), "b1": b(24), "w2": n(24, 12), "b2": b(12), "w3": n(12, 1), "b3": b(1)},
            lambda xp, p, x: sq(_mlp(xp, x, p)),
        ),
    }
    return [Check(name, params, (x,), fn) for name, (params, fn) in layers.items()]


def _rational(xp: Any, z: Any, p: Any, q: Any) -> Any:
    num = p[0] + z * (p[1] + z * (p[2] + z * (p[3] + z * p[4])))
    den = 1 + (z * (q[0] + z * (q[1] + z * (q[2] + z * q[3])))) ** 2
    return num / den


def _attention_pool(xp: Any, x: Any, p: dict[str, Any]) -> Any:
    e = xp.exp(xp.tanh(x @ p["w"]) @ p["v"])
    return sq_mean((e[:, None] * x).sum(0) / e.sum())


def sq_mean(h: Any) -> Any:
    return (h**2).mean()


def _softplus(xp: Any, z: Any) -> Any:
    return xp.log(1 + xp.exp(z))


def _mlp(xp: Any, x: Any, p: dict[str, Any]) -> Any:
    h = xp.tanh(xp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])
    return h @ p["w3"] + p["b3"]


def _highway(xp: Any, x: Any, p: dict[str, Any]) -> Any:
    t = _sigmoid(xp, x @ p["wt"] + p["bt"])
    return t * xp.tanh(x @ p["wh"] + p["bh"]) + (1 - t) * x


WORKLOADS: dict[str, Callable[[], list[Check]]] = {
    "cnn": _cnn,
    "lstm": _lstm,
    "transformer": _transformer,
    "suite": _suite,
}


# --------------------------------------------------------------------------------------------
# The methods, run inside a worker process
# --------------------------------------------------------------------------------------------


_JAX_FNS: dict[int, Callable[..., Any]] = {}


def _jax_fn(check: Check) -> Callable[..., Any]:
    """The JAX loss of ``check``: one function object per check, so that the warm phase calls
    the same function again, as a second check of a layer in one process does."""
    import jax.numpy as jnp

    if check.jax_loss is not None:
        return check.jax_loss
    if id(check) not in _JAX_FNS:
        _JAX_FNS[id(check)] = lambda p, *a: check.loss(jnp, p, *a)
    return _JAX_FNS[id(check)]


def _subsample(n: int, max_entries: int, seed: int) -> np.ndarray | None:
    if n <= max_entries:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, max_entries, replace=False))


def _run_gradlab(checks: list[Check]) -> dict[str, Any]:
    import gradlab
    from gradlab.gradcheck.programs._cache import compilation_cache

    ok = True
    with compilation_cache():
        for c in checks:
            ok &= bool(gradlab.check(_jax_fn(c), c.params, *c.args).ok)
    return {"passed": ok}


def _run_loop(checks: list[Check], max_entries: int, warm: bool) -> dict[str, Any]:
    """The lecture's loop; timed on a subsample past ``max_entries``, extrapolated."""
    import jax
    from jax.flatten_util import ravel_pytree

    seconds = estimated = 0.0
    worst = 0.0
    for k, c in enumerate(checks):
        f = _jax_fn(c)
        flat, unravel = ravel_pytree(c.params)
        t0 = time.perf_counter()
        cost = jax.jit(lambda th, f=f, u=unravel, a=c.args: f(u(th), *a))
        grad = jax.jit(jax.grad(lambda th, f=f, u=unravel, a=c.args: f(u(th), *a)))
        theta = np.array(flat, dtype=np.float64)
        float(cost(theta))
        grad(theta).block_until_ready()
        compile_s = time.perf_counter() - t0
        entries = _subsample(theta.size, max_entries, k)
        idx = np.arange(theta.size) if entries is None else entries
        t1 = time.perf_counter()
        work, num = theta.copy(), np.empty(idx.size)
        for j, i in enumerate(idx):
            work[i] = theta[i] + EPS
            plus = float(cost(work))
            work[i] = theta[i] - EPS
            num[j] = (plus - float(cost(work))) / (2 * EPS)
            work[i] = theta[i]
        ana = np.asarray(grad(theta))[idx]
        run = (time.perf_counter() - t1) * theta.size / idx.size
        seconds += run + (0.0 if warm else compile_s)
        estimated += entries is not None
        rel = np.linalg.norm(num - ana) / (np.linalg.norm(num) + np.linalg.norm(ana) + 1e-300)
        worst = max(worst, float(rel))
    return {
        "seconds": seconds,
        "estimated": bool(estimated),
        "relative_error": worst,
        "passed": worst <= 1e-6,  # gradlab's default tolerance
    }


def _torch_twin(check: Check, device: str) -> tuple[Any, list[Any], Callable[..., Any], tuple]:
    import jax
    import torch

    leaves, treedef = jax.tree_util.tree_flatten(check.params)
    tensors = [torch.tensor(v, dtype=torch.float64, device=device) for v in leaves]
    args = tuple(
        torch.tensor(a, device=device)
        if a.dtype.kind in "iu"
        else torch.tensor(a, dtype=torch.float64, device=device)
        for a in check.args
    )
    loss = lambda ts: check.loss(torch, jax.tree_util.tree_unflatten(treedef, list(ts)), *args)
    return torch, tensors, loss, args


def _run_torch(checks: list[Check], threads: int, device: str, max_entries: int) -> dict:
    """``torch.autograd.gradcheck(fast_mode=False)``; a subsample past ``max_entries``."""
    import jax
    import jax.numpy as jnp

    seconds, estimated, passed, twin = 0.0, False, True, 0.0
    for k, c in enumerate(checks):
        torch, tensors, loss, _ = _torch_twin(c, device)
        torch.set_num_threads(threads)
        with jax.enable_x64(True):
            want = float(_jax_fn(c)(jax.tree_util.tree_map(jnp.asarray, c.params), *c.args))
        got = float(loss(tensors))
        twin = max(twin, abs(got - want) / max(1.0, abs(want)))
        sizes = [t.numel() for t in tensors]
        base = torch.cat([t.reshape(-1) for t in tensors])
        entries = _subsample(base.numel(), max_entries, k)
        if entries is None:
            inputs = tuple(t.clone().requires_grad_(True) for t in tensors)
            fn = lambda *ts, loss=loss: loss(ts)
        else:
            idx = torch.as_tensor(entries, device=device)
            inputs = (base[idx].clone().requires_grad_(True),)

            shapes = [t.shape for t in tensors]

            def fn(
                sub: Any,
                idx: Any = idx,
                base: Any = base,
                loss: Any = loss,
                sizes: Any = sizes,
                shapes: Any = shapes,
                split: Any = torch.split,
            ) -> Any:
                parts = split(base.index_put((idx,), sub), sizes)
                return loss([p.reshape(s) for p, s in zip(parts, shapes, strict=True)])

        fn(*inputs).backward()  # first-call costs (kernel selection, thread pool) not timed
        t0 = time.perf_counter()
        try:
            passed &= bool(torch.autograd.gradcheck(fn, inputs, eps=EPS, fast_mode=False))
        except Exception:  # GradcheckError when the check fails
            passed = False
        n = base.numel()
        seconds += (time.perf_counter() - t0) * (n / entries.size if entries is not None else 1)
        estimated |= entries is not None
    assert twin <= TWIN_RTOL, f"torch twin differs from the JAX loss by {twin:.1e} (relative)"
    return {"seconds": seconds, "estimated": estimated, "passed": passed, "twin_rel_diff": twin}


def _run_check_grads(checks: list[Check]) -> dict[str, Any]:
    import jax
    from jax.test_util import check_grads

    passed = True
    for c in checks:
        f, args = _jax_fn(c), c.args
        try:
            check_grads(lambda p, f=f, a=args: f(p, *a), (c.params,), 1, modes=["rev"], eps=EPS)
        except AssertionError:
            passed = False
    jax.effects_barrier()
    return {"passed": passed}


def worker(workload: str, method: str, device: str, max_entries: int) -> dict[str, Any]:
    """Builds the workload and times ``method`` twice (cold, warm) in this fresh process."""
    t0 = time.perf_counter()
    import jax

    import gradlab  # noqa: F401  (import time is reported, not timed with the check)

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")
    if device == "gpu":
        jax.config.update("jax_default_device", jax.devices("gpu")[0])
    if method.startswith("torch"):
        import torch
    checks = WORKLOADS[workload]()
    import_s = time.perf_counter() - t0
    torch_device = "cpu"
    if device == "gpu" and method.startswith("torch"):
        import torch

        torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict[str, Any] = {"import_seconds": import_s, "params": _n_params(checks)}
    for phase in ("cold", "warm"):
        if phase == "warm" and method.startswith("torch"):
            out["warm"] = out["cold"]  # no compilation: one timing (after a warm-up call)
            break
        t = time.perf_counter()
        if method == "gradlab":
            info = _run_gradlab(checks)
        elif method == "loop":
            info = _run_loop(checks, max_entries, warm=phase == "warm")
        elif method.startswith("torch"):
            info = _run_torch(checks, int(method.split()[1]), torch_device, max_entries)
        else:
            info = _run_check_grads(checks)
        wall = time.perf_counter() - t
        out[phase] = {"seconds": info.pop("seconds", wall), **info}
    out["torch_device"] = torch_device
    return out


def _n_params(checks: list[Check]) -> int:
    import jax

    return int(sum(np.size(v) for c in checks for v in jax.tree_util.tree_leaves(c.params)))


# --------------------------------------------------------------------------------------------
# The run: fresh worker processes, ratios, tables
# --------------------------------------------------------------------------------------------


def _spawn(workload: str, method: str, args: argparse.Namespace, cache: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["GRADLAB_COMPILATION_CACHE"] = str(cache) if cache else "0"
    cmd = [sys.executable, __file__, "--worker", workload, method, "--device", args.device]
    cmd += ["--max-entries", str(args.max_entries)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_workload(workload: str, methods: list[str], args: argparse.Namespace) -> dict:
    """Every method on one workload, each in fresh processes; gradlab twice (empty, filled)."""
    results: dict[str, Any] = {}
    for method in methods:
        if method == "gradlab":
            with tempfile.TemporaryDirectory(prefix="gradlab-cache-") as cache:
                first = _spawn(workload, method, args, Path(cache))
                second = _spawn(workload, method, args, Path(cache))
            if "cold" in first and "cold" in second:
                first["cold_cached"] = second["cold"]
            results[method] = first
        else:
            results[method] = _spawn(workload, method, args, None)
        r = results[method]
        line = {p: round(r[p]["seconds"], 3) for p in ("cold", "cold_cached", "warm") if p in r}
        print(f"  {workload:12s} {method:16s} {line or r.get('error')}", flush=True)
    return results


def _seconds(r: dict, phase: str) -> float | None:
    if phase == "cold_cached" and "cold_cached" not in r:
        phase = "cold"  # no cache to fill: a second fresh process is another cold one
    return r.get(phase, {}).get("seconds")


def ratios(results: dict) -> dict[str, dict[str, float | None]]:
    """Per method and phase: its time ÷ gradlab's (> 1: gradlab is faster)."""
    g = results.get("gradlab", {})
    out = {}
    for method, r in results.items():
        out[method] = {}
        for phase in ("cold", "cold_cached", "warm"):
            a, b = _seconds(r, phase), _seconds(g, phase)
            out[method][phase] = a / b if a is not None and b else None
    return out


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def table_rows(data: dict) -> list[list[str]]:
    rows = []
    for workload, res in data["workloads"].items():
        rat = ratios(res)
        params = next((r["params"] for r in res.values() if "params" in r), "?")
        for method, r in res.items():
            if "error" in r:
                rows.append([f"{workload} ({params:,})", method, "error: " + r["error"][:60]])
                continue
            est = " est." if r["cold"].get("estimated") else ""
            ok = r["cold"].get("passed")
            rows.append([
                f"{workload} ({params:,})", method,
                _fmt(_seconds(r, "cold")) + est,
                _fmt(_seconds(r, "cold_cached")) + est,
                _fmt(_seconds(r, "warm"), 3) + est,
                " / ".join(_fmt(rat[method][p], 2) + "×" for p in ("cold", "cold_cached", "warm")),
                "" if ok is None else ("pass" if ok else "FAIL"),
            ])  # fmt: skip
    return rows


COLUMNS = ["workload (params)", "method", "cold s", "cold, cache filled s", "warm s",
           "÷ gradlab (cold / filled / warm)", "verdict"]  # fmt: skip


def markdown(data: dict) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row + [""] * (len(COLUMNS) - len(row))) + " |"
              for row in table_rows(data)]  # fmt: skip
    m = data["machine"]
    imports = ", ".join(f"{w} {v:.1f} s" for w, v in data["import_seconds"].items())
    lines += [
        "",
        f"Device: {data['device_name']}; load average {m['load_average_at_start']} at start, "
        f"{m.get('load_average_at_end')} at end; imports (not timed): {imports}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOAD_NAMES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument(
        "--max-entries",
        type=int,
        default=1000,
        help="entries per check past which the loop and torch are subsampled",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--markdown", action="store_true", help="print --out as markdown")
    parser.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = args.out or RESULTS / f"architectures_{args.device}.json"
    if args.worker:
        print(json.dumps(worker(*args.worker, args.device, args.max_entries)))
        return
    if args.markdown:
        print(markdown(json.loads(out.read_text())))
        return
    import jax

    if args.device == "gpu" and not [d for d in jax.devices() if d.platform == "gpu"]:
        sys.exit("error: --device gpu, but JAX has no GPU backend here; use --device cpu.")
    device_name = jax.devices(args.device)[0].device_kind
    methods = [m for m in args.methods.split(",") if not (args.no_torch and "torch" in m)]
    data: dict[str, Any] = {"device": args.device, "device_name": device_name,
                            "machine": machine_info(), "eps": EPS, "workloads": {},
                            "import_seconds": {}}  # fmt: skip
    print(f"device: {device_name}; load {data['machine']['load_average_at_start']}", flush=True)
    for workload in args.workloads.split(","):
        data["workloads"][workload] = run_workload(workload, methods, args)
        res = data["workloads"][workload].values()
        imports = [r["import_seconds"] for r in res if "import_seconds" in r]
        data["import_seconds"][workload] = float(np.median(imports)) if imports else float("nan")
        data["ratios"] = {w: ratios(r) for w, r in data["workloads"].items()}
        finish_machine_info(data["machine"])
        write_json(out, data)  # after every workload: a partial run keeps what it measured
    print_table(f"gradlab.check on architectures ({device_name}), seconds", COLUMNS,
                table_rows(data), left=2)  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

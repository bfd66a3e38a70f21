"""An independent, slow reference for the checker: a plain Python loop over entries.

It shares no code with gradlab.check: it jits ``f`` once and perturbs one entry at a time in
NumPy, exactly as slide 13 of the lecture describes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def loop_check(f, params, *args, eps=1e-7):
    """Per-leaf (numerical, analytical) gradients and relative errors, one entry at a time."""
    with jax.enable_x64(True), jax.default_matmul_precision("highest"):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        args = tuple(
            jax.tree_util.tree_map(
                lambda a: (
                    jnp.asarray(a, jnp.float64)
                    if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
                    else a
                ),
                arg,
            )
            for arg in args
        )
        leaves, treedef = jax.tree_util.tree_flatten(params)
        jf = jax.jit(lambda ls: f(jax.tree_util.tree_unflatten(treedef, ls), *args))
        ana = jax.grad(lambda ls: f(jax.tree_util.tree_unflatten(treedef, ls), *args))(leaves)
        out = []
        for k, leaf in enumerate(leaves):
            base = np.asarray(leaf, dtype=np.float64)
            num = np.zeros(base.size)
            for i in range(base.size):
                plus, minus = base.copy().reshape(-1), base.copy().reshape(-1)
                plus[i] += eps
                minus[i] -= eps
                step = plus[i] - minus[i]
                ls_p = [*leaves[:k], jnp.asarray(plus.reshape(base.shape)), *leaves[k + 1 :]]
                ls_m = [*leaves[:k], jnp.asarray(minus.reshape(base.shape)), *leaves[k + 1 :]]
                num[i] = (float(jf(ls_p)) - float(jf(ls_m))) / step
            a = np.asarray(ana[k], dtype=np.float64).reshape(-1)
            denom = np.linalg.norm(num) + np.linalg.norm(a)
            rel = 0.0 if denom == 0 else np.linalg.norm(num - a) / denom
            out.append((num, a, rel))
        return out

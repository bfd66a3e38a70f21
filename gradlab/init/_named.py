"""The named initialisers: LeCun, He and Glorot (normal and uniform), and the lecture's Glorot.

Each is an :class:`~gradlab.init.InitSpec` made by :func:`~gradlab.init.variance_scaling`, one
name per distribution. Their docstrings are attribute docstrings (the string after each
assignment, which the API pages read); :func:`_document` copies each onto its object, so that
``help()`` shows it, and into ``__test__``, so that the doctests run its example.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import sys

from gradlab.init._scaling import Distribution, Mode, _fan_scaled
from gradlab.init._spec import InitSpec

# Doctests of the attribute docstrings (filled by _document; read by doctest and pytest).
__test__: dict[str, str] = {}


def _named(name: str, *, scale: float, mode: Mode, distribution: Distribution) -> InitSpec:
    """``variance_scaling(scale, mode, distribution)`` under the name ``name``."""
    return _fan_scaled(name, scale, mode, distribution)


lecun_normal: InitSpec = _named("lecun_normal", scale=1.0, mode="fan_in", distribution="normal")
"""LeCun et al. (1998): ``N(0, 1 / fan_in)``. Keeps the variance of tanh/linear layers.

The lecture's tanh rule, std ``1/sqrt(n_prev)``, is this initialiser (``fan_in_normal(1.0)`` draws
the same arrays).

Example:
    >>> import jax
    >>> lecun_normal(jax.random.key(0), (4, 3)).shape
    (4, 3)
    >>> lecun_normal.weight_variance
    1.0
"""

lecun_uniform: InitSpec = _named("lecun_uniform", scale=1.0, mode="fan_in", distribution="uniform")
"""LeCun, uniform: ``U(-b, b)`` with ``b = sqrt(3 / fan_in)`` (variance ``1 / fan_in``).

Example:
    >>> import jax
    >>> w = lecun_uniform(jax.random.key(0), (300, 10))
    >>> bool(abs(w).max() <= (3 / 300) ** 0.5)
    True
"""

he_normal: InitSpec = _named("he_normal", scale=2.0, mode="fan_in", distribution="normal")
"""He et al. (2015): ``N(0, 2 / fan_in)``, std ``sqrt(2 / fan_in)``. For ReLU layers.

Example:
    >>> import jax
    >>> he_normal(jax.random.key(0), (10, 8, 8), batch_axis=0).shape  # 10 stacked layers
    (10, 8, 8)
"""

he_uniform: InitSpec = _named("he_uniform", scale=2.0, mode="fan_in", distribution="uniform")
"""He, uniform: ``U(-b, b)`` with ``b = sqrt(6 / fan_in)`` (variance ``2 / fan_in``).

Example:
    >>> import jax
    >>> w = he_uniform(jax.random.key(0), (300, 10))
    >>> bool(abs(w).max() <= (6 / 300) ** 0.5)
    True
"""

glorot_normal: InitSpec = _named("glorot_normal", scale=1.0, mode="fan_avg", distribution="normal")
"""Glorot & Bengio (2010): ``N(0, 2 / (fan_in + fan_out))``.

Example:
    >>> import jax
    >>> w = glorot_normal(jax.random.key(0), (300, 100))
    >>> round(float(w.std() * ((300 + 100) / 2) ** 0.5), 1)
    1.0
"""

glorot_uniform: InitSpec = _named(
    "glorot_uniform", scale=1.0, mode="fan_avg", distribution="uniform"
)
"""Glorot & Bengio (2010), uniform: ``U(-b, b)``, ``b = sqrt(6 / (fan_in + fan_out))``.

Example:
    >>> import jax
    >>> w = glorot_uniform(jax.random.key(0), (300, 100))
    >>> bool(abs(w).max() <= (6 / 400) ** 0.5)
    True
"""

lecture_glorot: InitSpec = _named(
    "lecture_glorot", scale=2.0, mode="fan_avg", distribution="normal"
)
"""The lecture's literal ReLU rule: std ``2 / sqrt(n_prev + n_cur)``.

Variance ``4 / (fan_in + fan_out)``: twice Glorot's ``2 / (fan_in + fan_out)``, and for a
square layer equal to ``2 / n``, He's variance (``weight_variance == 2``). Not Glorot's
``sqrt(2 / (n_in + n_out))``.

Example:
    >>> import jax
    >>> w = lecture_glorot(jax.random.key(0), (300, 100))
    >>> round(float(w.std() * (300 + 100) ** 0.5 / 2), 1)
    1.0
"""


def _document(module_name: str) -> None:
    """Gives each :class:`InitSpec` assigned in the module the string written after it.

    Sets the object's ``__doc__`` (and ``__name__``, ``__qualname__``, ``__module__``, as a
    function has) and registers the string in ``__test__`` so that doctest runs its examples.
    """
    module = sys.modules[module_name]
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):  # installed without sources: the objects keep InitSpec's doc
        return
    body = ast.parse(source).body
    for node, after in itertools.pairwise(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if not (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)):
            continue
        spec, doc = getattr(module, node.target.id), after.value.value
        if isinstance(spec, InitSpec) and isinstance(doc, str):
            attrs = {"__doc__": doc, "__name__": spec.name, "__qualname__": spec.name}
            for attr, value in {**attrs, "__module__": module_name}.items():
                object.__setattr__(spec, attr, value)
            __test__[spec.name] = doc


_document(__name__)

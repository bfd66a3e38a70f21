"""``gradlab demo``: the lecture's vanishing/exploding gradients, measured and predicted.

:func:`run` measures, on embedded defaults:

1. the lecture's chains ``1.1**150`` and ``0.9**150`` next to 150-layer linear networks with
   orthogonal and Gaussian weights (measured vs exact theory);
2. the lecture's initialisers at depth 150, tanh and ReLU (measured vs theory), and the
   per-example weight gradients, which stay level where ``∂L/∂h_l`` vanishes;
3. plain vs residual ReLU stacks at depth 150;
4. LSTM vs RNN over 100 time steps, with the LSTM's cell path ``Π f_t`` vs ``σ(b_f)^T``;
5. :func:`gradlab.check` on the built-in models (small sizes) and on a deliberately buggy
   ``custom_vjp``;

prints rich tables as it goes, and writes figures (PNG + SVG; PNG only with ``quick``),
``summary.json`` and ``summary.md`` into the output folder. ``quick=True`` runs a reduced
version (fewer configurations, width 16, 4 seeds).

Example:
    >>> from gradlab import demo
    >>> s = demo.DemoSettings.quick_settings()
    >>> s.depth, s.seeds
    (150, 4)
"""

from __future__ import annotations

from gradlab.demo._run import run
from gradlab.demo._settings import DemoSettings

__all__ = ["DemoSettings", "run"]

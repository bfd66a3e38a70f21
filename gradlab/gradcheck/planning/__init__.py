"""Stage 5, the check described before anything runs: problem, options, costs, steps, plan.

Takes ``f``, its arguments and the options; traces ``f`` to its program, lists its leaves,
chooses cotangents, default steps and thresholds, estimates FLOPs and memory, and plans each
leaf's perturbations, chunks and kernel calls. Hands a problem and its plans on. May import
programs.
"""

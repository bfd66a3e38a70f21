"""Stage 4, running ``f``: once at θ, then compiled kernels over chunks of perturbations.

Takes a problem and its plan; evaluates centered differences of entries or directions (an
entry's move carried through ``f``'s jaxpr as a slice), forward-mode and second-order
columns, Richardson differences and ``eps="auto"`` probes. Hands the measurements on. May
import planning, programs and report.
"""

"""gradlab: see and fix vanishing and exploding gradients in JAX, and verify gradients.

The centre is :func:`gradlab.check`, a centered-difference gradient checker that perturbs every
parameter entry in parallel and reports per leaf with the lecture's relative-error bands.
"""

from gradlab import experiments, flow, init, losses, nn, theory, train
from gradlab.gradcheck import (
    BANDS,
    CheckInputError,
    CheckOptions,
    CheckReport,
    EntryMismatch,
    GradCheckError,
    LeafReport,
    RuleReport,
    assert_check,
    check,
    check_rule,
    relative_error,
    verdict,
)

__version__ = "0.1.0"

__all__ = [
    "BANDS",
    "CheckInputError",
    "CheckOptions",
    "CheckReport",
    "EntryMismatch",
    "GradCheckError",
    "LeafReport",
    "RuleReport",
    "__version__",
    "assert_check",
    "check",
    "check_rule",
    "experiments",
    "flow",
    "init",
    "losses",
    "nn",
    "relative_error",
    "theory",
    "train",
    "verdict",
]

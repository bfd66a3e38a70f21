"""The parallel centered-difference gradient checker (``gradlab.check``)."""

from gradlab.gradcheck.api import assert_check, check
from gradlab.gradcheck.bands import BANDS, relative_error, verdict
from gradlab.gradcheck.errors import CheckInputError, GradCheckError
from gradlab.gradcheck.report import CheckReport, EntryMismatch, LeafReport

__all__ = [
    "BANDS",
    "CheckInputError",
    "CheckReport",
    "EntryMismatch",
    "GradCheckError",
    "LeafReport",
    "assert_check",
    "check",
    "relative_error",
    "verdict",
]

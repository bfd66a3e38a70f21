"""The parallel centered-difference gradient checker (``gradlab.check``, ``check_rule``)."""

from gradlab.gradcheck.api import assert_check, check
from gradlab.gradcheck.bands import BANDS, relative_error, verdict
from gradlab.gradcheck.errors import CheckInputError, GradCheckError
from gradlab.gradcheck.options import CheckOptions
from gradlab.gradcheck.report import CheckReport, EntryMismatch, LeafReport
from gradlab.gradcheck.rules import RuleEntry, RuleReport, RuleRow, check_rule

__all__ = [
    "BANDS",
    "CheckInputError",
    "CheckOptions",
    "CheckReport",
    "EntryMismatch",
    "GradCheckError",
    "LeafReport",
    "RuleEntry",
    "RuleReport",
    "RuleRow",
    "assert_check",
    "check",
    "check_rule",
    "relative_error",
    "verdict",
]

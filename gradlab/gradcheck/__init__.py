"""The parallel centered-difference gradient checker (``gradlab.check`` and its kin)."""

from gradlab._errors import CheckInputError, GradCheckError
from gradlab.gradcheck._api import assert_check, check, check_second_order
from gradlab.gradcheck._bands import BANDS, relative_error, verdict
from gradlab.gradcheck._report import CheckReport, EntryMismatch, LeafReport
from gradlab.gradcheck._rules import RuleEntry, RuleReport, RuleRow, check_rule
from gradlab.gradcheck._settings import Criteria, Directional, Entries, Execution, Full, Sample

__all__ = [
    "BANDS",
    "CheckInputError",
    "CheckReport",
    "Criteria",
    "Directional",
    "Entries",
    "EntryMismatch",
    "Execution",
    "Full",
    "GradCheckError",
    "LeafReport",
    "RuleEntry",
    "RuleReport",
    "RuleRow",
    "Sample",
    "assert_check",
    "check",
    "check_rule",
    "check_second_order",
    "relative_error",
    "verdict",
]

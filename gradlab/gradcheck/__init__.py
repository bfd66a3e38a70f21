"""The parallel centered-difference gradient checker (``gradlab.check`` and its kin)."""

from gradlab._errors import CheckInputError, GradCheckError
from gradlab.gradcheck.api._check import assert_check, check, check_second_order
from gradlab.gradcheck.api._check_rule import check_rule
from gradlab.gradcheck.planning._settings import (
    Criteria,
    Directional,
    Entries,
    Execution,
    Full,
    Sample,
)
from gradlab.gradcheck.report._bands import BANDS, relative_error, verdict
from gradlab.gradcheck.report._leaf_report import EntryMismatch, LeafReport
from gradlab.gradcheck.report._report import CheckReport
from gradlab.gradcheck.report._rule_report import RuleEntry, RuleReport, RuleRow

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

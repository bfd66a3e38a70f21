"""Exceptions raised by the gradient checker."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradlab.gradcheck.report import CheckReport

__all__ = ["CheckInputError", "GradCheckError"]


class CheckInputError(ValueError):
    """The function or parameters given to the checker cannot be checked as they are.

    The message names the problem and how to fix it.
    """


class GradCheckError(AssertionError):
    """A gradient check failed; ``str(error)`` is the full report.

    Attributes:
        report: The :class:`~gradlab.CheckReport` of the failed check.
    """

    def __init__(self, report: CheckReport) -> None:
        super().__init__(str(report))
        self.report = report

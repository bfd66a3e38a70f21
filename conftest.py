"""The doctests' marks, for any pytest run from the repository (tests/conftest.py: fixtures)."""

import pytest

#: Packages whose doctests build, train or compare whole networks: they run in the full suite,
#: not in the fast loop (``-m "not slow"``), which keeps every other package's doctests.
_SLOW_DOCTESTS = ("gradlab.nn", "gradlab.init", "gradlab.train")


def pytest_collection_modifyitems(config, items):
    """Marks the doctests of :data:`_SLOW_DOCTESTS` slow."""
    for item in items:
        if type(item).__name__ == "DoctestItem" and item.name.startswith(_SLOW_DOCTESTS):
            item.add_marker(pytest.mark.slow)

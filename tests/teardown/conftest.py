"""Runs last (make test lists it after the lab and fault suites): the lab comes down without
leaving anything behind."""
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/teardown/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)

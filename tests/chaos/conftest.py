"""The fault suite runs against the same lab and deploy as the lab tests (tests/conftest.py);
it shares their AMQP/management helpers."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)

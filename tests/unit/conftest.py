"""Unit-test fixtures: inventories under tests/unit/fixtures, independent of the checkout's
inventory.yaml and of the lab, and a way to write a variant of one into tmp_path."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deploy.inventory import Inventory, load_inventory

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def write_variant(tmp_path: Path, *replace: tuple[str, str], append: str = "",
                  source: str = "inventory.yaml") -> Path:
    """The fixture `source` copied to tmp_path/inventory.yaml with each (old, new) replaced
    and `append` added, next to a copy of the fixture project (so relative paths still hold).
    An `old` that is not in the text fails: a variant must not silently stop varying."""
    text = (FIXTURES / source).read_text()
    for old, new in replace:
        assert old in text, f"{old!r} is not in {source}"
        text = text.replace(old, new)
    if not (tmp_path / "project").exists():
        shutil.copytree(FIXTURES / "project", tmp_path / "project")
    path = tmp_path / "inventory.yaml"
    path.write_text(text + append)
    return path


@pytest.fixture
def fixture_inventory() -> Inventory:
    return load_inventory(FIXTURES / "inventory.yaml")


@pytest.fixture
def variant(tmp_path: Path):
    """write_variant bound to this test's tmp_path."""
    def write(*replace: tuple[str, str], append: str = "", source: str = "inventory.yaml") -> Path:
        return write_variant(tmp_path, *replace, append=append, source=source)
    return write

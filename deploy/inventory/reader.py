"""Reading values off the YAML data against their settings, collecting problems as it goes.

Reader is the base of the inventory checker (validate.py, hostcheck.py): it knows how to read
a mapping of settings, a value of each kind and a list, and how to report a problem at a key
path. It knows nothing about what any section means.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .checks import printable, suggest
from .model import Spec
from .yamlload import KINDS, KeyPath, Loaded, format_path, show

BAD = object()           # marks a value that was reported and left out


def resolve(base: Path, value: str) -> Path:
    # Relative to the inventory file, not to wherever fab happens to be run from.
    return Path(os.path.abspath(base / os.path.expanduser(value)))


class Reader:
    def __init__(self, loaded: Loaded, shown: str):
        self.loaded = loaded
        self.shown = shown
        self.found: list[tuple[int, str]] = []
        self.bad: set[KeyPath] = set()
        for line, path, message in loaded.problems:
            self.add(path, message, line)

    def add(self, path: KeyPath, message: str, line: int | None = None) -> None:
        line = line or self.loaded.line(path)
        self.bad.add(path)
        self.found.append((line, f"{self.shown}:{line}: {format_path(path)}: {message}"))

    def read(self, data: Any, path: KeyPath, fields: dict[str, Spec]) -> dict[str, Any]:
        """The valid values of a mapping's known keys. Absent or null means an empty mapping:
        a section whose every line is commented out is just a section of defaults."""
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.add(path, f"expected a mapping, got {show(data)}")
            return {}
        for key in data:
            if key not in fields:
                hint = suggest(key, fields) or f"; known keys: {', '.join(fields)}"
                self.add(path + (key,), f"unknown key {key!r}{hint}")
        values = {}
        for key, spec in fields.items():
            if key in data:
                value = self.value(data[key], path + (key,), spec)
                if value is not BAD:
                    values[key] = value
        return values

    def value(self, value: Any, path: KeyPath, spec: Spec) -> Any:
        if (value is None and spec.nullable) or spec.kind == "map":
            return value              # a sub-mapping is read by whoever knows its keys
        accepts, expected = KINDS[spec.kind]
        if not accepts(value):
            self.add(path, f"expected {expected}, got {show(value)}")
            return BAD
        if spec.kind == "strs":
            return self.str_list(value, path, spec)
        if spec.kind == "size":
            value = str(value)
        problem = self.problem(value, spec)
        if problem:
            self.add(path, problem)
            return BAD
        return value

    @staticmethod
    def problem(value: Any, spec: Spec) -> str | None:
        """The first rule value breaks. Every string is checked for line breaks and control
        characters first, whatever its own rules: the generic guard no setting can forget."""
        checks = (printable, *spec.checks) if isinstance(value, str) else spec.checks
        return next((message for check in checks if (message := check(value))), None)

    def str_list(self, value: list[Any], path: KeyPath, spec: Spec) -> Any:
        """A list of unique strings, non-empty unless the setting says otherwise; every bad
        item is reported at its own index."""
        if not value and not spec.may_be_empty:
            self.add(path, "must not be empty")
            return BAD
        first: dict[str, int] = {}
        ok = True
        for index, item in enumerate(value):
            if not isinstance(item, str):
                problem = f"expected a string, got {show(item)}"
            elif item in first:
                problem = f"{item!r} is listed twice (also as [{first[item]}])"
            else:
                first[item] = index
                problem = self.problem(item, spec)
            if problem:
                self.add(path + (index,), problem)
                ok = False
        return tuple(value) if ok else BAD

    def clash(self, section: KeyPath, data: Any, values: dict[str, Any], defaults: Any,
              keys: tuple[str, ...], why: str) -> None:
        """Report keys of one section that must all differ but have the same value, at the
        later of the two keys that the file gives (a default has no line)."""
        seen: dict[Any, str] = {}
        for key in keys:
            if section + (key,) in self.bad:
                continue
            value = values.get(key, getattr(defaults, key))
            if value in seen:
                given = [k for k in (seen[value], key) if isinstance(data, dict) and k in data]
                self.add(section + tuple(given[-1:]),
                         f"{key} and {seen[value]} are both {value!r}; {why}")
            else:
                seen[value] = key

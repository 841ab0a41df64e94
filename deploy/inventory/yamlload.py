"""YAML loading for the inventory: plain data, plus the line of every key, plus duplicate keys.

yaml.safe_load forgets where each value came from, and it silently keeps the last of two equal
keys, so a host name written twice would make a host vanish without a word. This module lets
PyYAML parse and compose the node tree, then builds the Python data itself: it records the
1-based line of every key path and reports each repeated key together with the first one.

A key path is a tuple of mapping keys (str) and list indexes (int):
("hosts", "node2", "roles", 1) is printed as hosts.node2.roles[1]. The YAML value kinds a
setting can have (KINDS) and how a value is quoted back in a message (show) live here too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .model import InventoryError

KeyPath = tuple[str | int, ...]
MERGE_TAG = "tag:yaml.org,2002:merge"


def format_path(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "top level"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)   # YAML true is not 1


# The kinds of value a setting can take (model.Spec.kind), as YAML types:
# kind -> (accepts the value?, what a message says was expected). "map" is read key by key.
KINDS = {
    "int": (_is_int, "an integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "size": (lambda v: isinstance(v, str) or _is_int(v), "a size such as 256mb"),
    "mirrors": (lambda v: isinstance(v, str) or _is_int(v), "'majority', 'all' or a number"),
    "strs": (lambda v: isinstance(v, list), "a list of strings"),
}


def show(value: Any) -> str:
    """A value as the file spells it, and its type: 'two' (str), true (bool)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({type(value).__name__})"


@dataclass
class Loaded:
    """The document as plain dicts/lists/scalars, and where each key path was written."""
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    # Problems found while building (duplicate keys): (line, key path, message).
    problems: list[tuple[int, KeyPath, str]] = field(default_factory=list)

    def line(self, path: KeyPath) -> int:
        """Line of path, or of its nearest parent that exists (a missing key has no line)."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)


def load_yaml(path: Path, shown: str) -> Loaded:
    """Parse the file. Unreadable files and YAML syntax errors stop here: nothing after the
    error can be trusted, so there is nothing more to check."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(shown, [f"{shown}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(shown, [f"{shown}: cannot read the file: {exc}"]) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        loaded = Loaded(data=None, lines={(): 1})
        if node is not None:
            loaded.lines[()] = node.start_mark.line + 1
            loaded.data = _Builder(loader, loaded, shown).build(node, ())
        return loaded
    except yaml.MarkedYAMLError as exc:
        raise InventoryError(shown, [_syntax_problem(shown, exc)]) from None
    except yaml.YAMLError as exc:
        raise InventoryError(shown, [f"{shown}: YAML error: {exc}"]) from None
    finally:
        loader.dispose()


def _syntax_problem(shown: str, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    what = "; ".join(p for p in (exc.context, exc.problem) if p) or "cannot parse"
    if exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
        what += f" (started on line {exc.context_mark.line + 1})"
    return f"{shown}:{line}: YAML syntax error: {what}"


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, loaded: Loaded, shown: str):
        self.loader = loader
        self.loaded = loaded
        self.shown = shown
        self.active: set[int] = set()     # ids of the nodes being built, to catch alias loops

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        if isinstance(node, yaml.ScalarNode):
            # The loader's own constructors give YAML's usual types (int, bool, null, ...).
            return self.loader.construct_object(node, deep=True)
        if id(node) in self.active:
            raise InventoryError(self.shown, [
                f"{self.shown}:{node.start_mark.line + 1}: {format_path(path)}: "
                "an alias refers to itself; the value would be infinite"])
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self.sequence(node, path)
            return self.mapping(node, path)
        finally:
            self.active.discard(id(node))

    def sequence(self, node: yaml.SequenceNode, path: KeyPath) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            self.loaded.lines[path + (index,)] = item.start_mark.line + 1
            items.append(self.build(item, path + (index,)))
        return items

    def mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        # "<<: *defaults" supplies keys the mapping does not set itself, wherever the "<<"
        # stands: merge first, then let the mapping's own keys override (not duplicates).
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                self.merge(result, value_node, path)
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.loaded.problems.append(
                    (line, path, "a key must be a plain name, not a list or a mapping"))
                continue
            # The key as written: "1", "on" and "no" stay names instead of turning into
            # numbers and booleans (host and user names can be any of those).
            key = key_node.value
            if key in first_line:
                self.loaded.problems.append((line, path + (key,), (
                    f"duplicate key '{key}' on lines {first_line[key]} and {line}; "
                    "YAML would silently keep only the last one")))
            else:
                first_line[key] = line
            self.loaded.lines[path + (key,)] = line
            result[key] = self.build(value_node, path + (key,))
        return result

    def merge(self, result: dict[str, Any], value_node: yaml.Node, path: KeyPath) -> None:
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        # In a merge list, earlier mappings win: apply them last.
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                line = source.start_mark.line + 1
                self.loaded.problems.append((line, path, "'<<' can only merge mappings"))
                continue
            result.update(self.build(source, path))

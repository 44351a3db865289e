"""YAML reading that refuses what PyYAML would silently accept or take forever over.

- A key written twice: with PyYAML the last of two ``adam:`` cells silently wins.
- An alias bomb (``b: [*a, *a, ...]`` nested a few levels) is a few hundred bytes that expand to billions of
  nodes; everything that walks the loaded tree (``${SAL_DATA}`` expansion, validation) would hang. The size
  of the expanded tree is counted on the composed node graph (linear in the file) before anything is built.
- A document nested deeper than ``MAX_DEPTH`` (``{a: {a: ...}}`` a thousand times): PyYAML composes and
  constructs nodes recursively and would end in a RecursionError; it is refused while composing.
- Errors name the file, not PyYAML's ``<unicode string>``.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

__all__ = ["UniqueKeyLoader", "load_unique", "MAX_NODES", "MAX_DEPTH"]

_MERGE = "tag:yaml.org,2002:merge"
MAX_NODES = 100_000  # expanded nodes of one spec; the largest paper preset has a few hundred
MAX_DEPTH = 100  # nesting of one spec (a preset nests 4 levels); PyYAML's recursion stays far below Python's limit


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader whose mappings reject a key written twice (merge keys ``<<:`` may still be overridden) and
    whose documents may expand to at most ``MAX_NODES`` nodes through aliases and nest ``MAX_DEPTH`` deep."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"it nests deeper than sal reads ({MAX_DEPTH} levels); fix: "
                                    "flatten the spec", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node


def _check_expanded_size(root: yaml.Node) -> None:
    """Raise a YAMLError when the tree ``root`` stands for, with every alias expanded, exceeds MAX_NODES nodes
    or contains itself. Each distinct node is visited once (memoised), so the check is linear in the file."""
    size: dict[int, int] = {}
    open_nodes: set[int] = set()

    def expanded(node: yaml.Node) -> int:
        key = id(node)
        if key in size:
            return size[key]
        if key in open_nodes:
            raise ConstructorError(None, None, "an alias refers to itself (a recursive structure); fix: write "
                                   "the value out instead of the alias", node.start_mark)
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(expanded(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(expanded(k) + expanded(v) for k, v in node.value)
        open_nodes.discard(key)
        if total > MAX_NODES:
            raise ConstructorError(None, None, f"its aliases expand to more than {MAX_NODES:,} values (an alias "
                                   "bomb?); fix: write the values out, or use fewer nested aliases",
                                   node.start_mark)
        size[key] = total
        return total

    stack_safe(expanded, root)


def stack_safe(fn, root):
    """Run ``fn(root)`` with room for the recursion of a deeply nested (but small) document."""
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        return fn(root)
    except RecursionError:
        raise ConstructorError(None, None, "it nests deeper than sal reads; fix: flatten the spec",
                               root.start_mark) from None
    finally:
        sys.setrecursionlimit(limit)


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = key in first_line
        except TypeError:  # an unhashable key: PyYAML reports it below
            continue
        if seen:
            raise ConstructorError(
                "while reading a mapping", node.start_mark,
                f"found the key {key!r} twice (lines {first_line[key] + 1} and {key_node.start_mark.line + 1}); "
                "the second would silently replace the first", key_node.start_mark)
        first_line[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_unique(text: str, *, name: str | None = None) -> Any:
    """``yaml.safe_load`` that raises ``yaml.YAMLError`` on a duplicate key (naming both lines) or an alias
    bomb; ``name`` (the file) is what error marks show instead of ``<unicode string>``."""
    loader = UniqueKeyLoader(text)
    if name is not None:
        loader.name = name  # the Reader's name, used by every mark
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()

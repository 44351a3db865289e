"""YAML reading that refuses duplicate keys: with PyYAML the last of two ``adam:`` cells silently wins."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

__all__ = ["UniqueKeyLoader", "load_unique"]

_MERGE = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader whose mappings reject a key written twice (merge keys ``<<:`` may still be overridden)."""


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


def load_unique(text: str) -> Any:
    """``yaml.safe_load`` that raises ``yaml.YAMLError`` on a duplicate key, naming both lines."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass

"""YAML as configs are read everywhere: safe (standard tags only) and without duplicate keys."""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, mark: Any, first: Any) -> None:
        super().__init__(f"duplicate key {key!r} at line {mark.line + 1}, column {mark.column + 1} "
                         f"(first at line {first.line + 1}): keep one")
        self.key = key


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the last
    one silently: ``min_words: 50`` then ``min_words: 500`` would mean 500 without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if first is not None:
                raise DuplicateKeyError(key, key_node.start_mark, first)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Safe YAML (no tags beyond the standard ones) without duplicate keys."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass

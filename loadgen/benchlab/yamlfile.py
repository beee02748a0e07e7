"""Reading the lab's YAML files (scenarios, claims) one strict way.

PyYAML's safe loader accepts a key given twice (the last one silently wins) and reads ``1e12``
as a string (YAML 1.1 wants a dot); both surprise a user. This loader refuses duplicate keys
and reads exponent floats as numbers, and every problem is one line naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from benchlab.errors import BenchlabError


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: Path, name: str | None = None) -> Any:
    """The parsed document; a syntax error, a duplicate key or an unreadable file is one line
    starting with ``name`` (default: the file's name)."""
    name = name or path.name
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = str(getattr(exc, "problem", None) or exc).replace("\n", " ")
        raise BenchlabError(f"{name}: YAML syntax error{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchlabError(f"{name}: cannot read: {exc}") from None

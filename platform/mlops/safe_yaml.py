"""Reading the YAML files users hand us (params.yaml, the server's users file), bounded.

Whatever a file holds, reading it costs little: only regular files are read (never
/dev/zero, a FIFO or a directory), at most `MAX_FILE_BYTES`; nesting deeper than
`MAX_DEPTH` levels and aliases that expand to more than `MAX_NODES` values (a "billion
laughs" document) are refused while the document is composed, before anything is built.
Scalars follow YAML 1.2's core schema, as DVC reads params.yaml (`1e-3` is a float, `010`
is ten, `yes` is a string), and a duplicate key is refused instead of silently keeping the
last one. Every problem is one `UserError` line naming the file.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent
from yaml.nodes import Node

from mlops.errors import UserError, first_line

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 100_000


def read_text(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes; anything else is one
    `UserError` line naming the file (nothing is read from a device, FIFO or directory)."""
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer (no effect on files).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    too_big = f"{path}: cannot read: larger than {limit / 1024**2:g} MiB"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a device, pipe or socket"
            raise UserError(f"{path}: cannot read: not a regular file ({kind})")
        if info.st_size > limit:
            raise UserError(too_big)
        with os.fdopen(fd, "rb") as file:
            fd = -1  # the file object closes it
            data = file.read(limit + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > limit:  # it grew, or its size is not known in advance (/proc)
        raise UserError(too_big)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot read: not UTF-8 text (byte {exc.start})") from None


class Loader(yaml.SafeLoader):
    """Safe YAML loader: core-schema scalars, duplicate keys refused, nesting and alias
    expansion bounded (see the module's docstring)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._values = 0  # nodes so far, each alias counting the nodes it stands for
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """Compose one node, counting its depth and its expanded size."""
        if self.check_event(AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            self._count(self._sizes.get(id(node), 1), mark)
            return node
        mark = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        before = self._values
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._count(1, mark)
        self._sizes[id(node)] = self._values - before
        return node

    def _count(self, values: int, mark: Any) -> None:
        self._values += values
        if self._values > MAX_NODES:
            raise ComposerError(
                None, None, f"more than {MAX_NODES} values (counting what aliases repeat)", mark
            )


_CORE_SCHEMA = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
]
_REPLACED = {tag for tag, _, _ in _CORE_SCHEMA}
Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in _CORE_SCHEMA:
    Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _construct_int(loader: Loader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text)


def _construct_mapping(loader: Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "a key must be a plain value, not a list or mapping",
                key_node.start_mark,
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse(text: str, source: str) -> Any:
    """The YAML document in `text`; broken YAML is one `UserError` line naming `source`
    with the line and column."""
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise UserError(f"{source}:{where}: invalid YAML: {problem}") from None
    except RecursionError:  # a guard: MAX_DEPTH keeps composing far from the limit
        raise UserError(f"{source}: invalid YAML: nested too deeply") from None


def load(path: Path, limit: int = MAX_FILE_BYTES) -> Any:
    """Read and parse a YAML file, bounded; every problem is one `UserError` line."""
    return parse(read_text(path, limit), str(path))

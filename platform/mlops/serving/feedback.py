"""Live labels: `POST /feedback` joins a label to the answer a row got, by the row's id.

Every `/predict` answer carries one id per row (`Ids`); with `mlops serve --feedback`
the sink records every answer (table `answers`: rid, role, ts, model, version, prediction)
and what each version's answers mean (table `versions`: task, classes). A label is
checked against the version that answered: a class of that version (classification) or
a finite number (regression). Labels may come late, for some rows only, and again: the
last one wins (table `labels`: rid, ts, label). A request with an unknown id or a label
that does not fit is refused whole, naming the entry: nothing is written.

Reading them back (the live window, `mlops monitor performance`, live comparisons and
gates in the registry) is `mlops.live`'s.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mlops.serving.schema import BadRequest
from mlops.serving.sink import PRIMARY

MAX_ID = 64  # characters of an id we accept back
FLOAT32_MAX = 3.4028234663852886e38  # a regression label beyond float32 is refused


class Ids:
    """Row ids: this process's random prefix and a counter (unique across restarts and
    processes sharing a sink; cheap enough for every row)."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(6)
        self._count = itertools.count(1)

    def take(self, n: int) -> list[str]:
        """`n` new ids."""
        prefix, count = self.prefix, self._count
        return [f"{prefix}-{next(count)}" for _ in range(n)]


class UnknownId(BadRequest):
    """A label names an id no recorded answer has (yet: under `--workers`, the answer may
    still be on its way to the sink from another worker)."""


@dataclass(frozen=True)
class Entry:
    """One label of a `/feedback` body: where it was in the list, the row id, the label."""

    index: int
    rid: str
    label: Any


def parse_feedback(raw: bytes, max_rows: int) -> list[Entry]:
    """`{"labels": [{"id": "…", "label": …}, …]}` as entries, or a 400/422 naming the
    first thing wrong (nothing is looked up yet)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"labels"}:
        raise BadRequest(422, 'send {"labels": [{"id": ROW_ID, "label": LABEL}, …]}')
    labels = doc["labels"]
    if not isinstance(labels, list) or not labels:
        raise BadRequest(422, "labels: a non-empty list of {id, label} objects")
    if len(labels) > max_rows:
        raise BadRequest(413, f"labels: {len(labels)} entries, over {max_rows} per request")
    entries, seen = [], set()
    for i, item in enumerate(labels):
        if not isinstance(item, dict) or set(item) != {"id", "label"}:
            raise BadRequest(422, f"labels[{i}]: an object with exactly `id` and `label`")
        rid, label = item["id"], item["label"]
        if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID:
            raise BadRequest(422, f"labels[{i}].id: the id a /predict answer gave (a string)")
        if label is None or isinstance(label, dict | list):
            raise BadRequest(422, f"labels[{i}].label: a class or a number, not {_kind(label)}")
        if rid in seen:
            raise BadRequest(422, f"labels[{i}].id: {rid!r} is labelled twice in this request")
        seen.add(rid)
        entries.append(Entry(i, rid, label))
    return entries


def _kind(value: Any) -> str:
    return "null" if value is None else ("an object" if isinstance(value, dict) else "a list")


@dataclass(frozen=True)
class Stored:
    """What `store` did: labels written, how many replaced an earlier one, and how many
    label each version's answers."""

    accepted: int
    replaced: int
    versions: dict[tuple[str, int], int]


def store(path: Path, entries: list[Entry]) -> Stored:
    """Check each entry against the answer it names and write them all in one
    transaction, or none (a 422 naming the first entry that does not fit)."""
    # The server's sink created the tables when it started: no schema work per request.
    with closing(sqlite3.connect(str(path), timeout=30.0)) as conn:
        conn.execute("BEGIN IMMEDIATE")  # one writer of labels at a time: last one wins
        try:
            found = _answers(conn, [e.rid for e in entries])
            meaning = _versions(conn)
            rows: list[tuple[str, float, str]] = []
            seen: dict[tuple[str, int], int] = {}
            for e in entries:
                answers = found.get(e.rid, {})
                if PRIMARY not in answers:
                    raise UnknownId(
                        422, f"labels[{e.index}].id: unknown id {e.rid!r} (no answer recorded "
                        "with it here: a typo, another server's sink, or before --feedback)",
                    )  # fmt: skip
                model, version = answers[PRIMARY]
                task, classes = meaning.get((model, version), ("classification", []))
                rows.append((e.rid, time.time(), _label(e, task, classes, model, version)))
                for labelled in answers.values():  # the answer given, and a shadow's score
                    seen[labelled] = seen.get(labelled, 0) + 1
            replaced = _already(conn, [e.rid for e in entries])
            conn.executemany(
                "INSERT OR REPLACE INTO labels (rid, ts, label) VALUES (?, ?, ?)", rows
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return Stored(len(rows), replaced, seen)


def _answers(conn: sqlite3.Connection, rids: list[str]) -> dict[str, dict[str, tuple[str, int]]]:
    """Each id's recorded answers by role: (model, version)."""
    found: dict[str, dict[str, tuple[str, int]]] = {}
    for chunk in _chunks(sorted(set(rids)), 500):
        marks = ",".join("?" * len(chunk))
        query = f"SELECT rid, role, model, version FROM answers WHERE rid IN ({marks})"
        for rid, role, m, v in conn.execute(query, chunk):
            found.setdefault(rid, {})[role] = (m, int(v))
    return found


def _already(conn: sqlite3.Connection, rids: list[str]) -> int:
    total = 0
    for chunk in _chunks(sorted(set(rids)), 500):
        marks = ",".join("?" * len(chunk))
        total += conn.execute(
            f"SELECT COUNT(*) FROM labels WHERE rid IN ({marks})", chunk
        ).fetchone()[0]
    return int(total)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _versions(conn: sqlite3.Connection) -> dict[tuple[str, int], tuple[str, list[Any]]]:
    rows = conn.execute("SELECT model, version, task, classes FROM versions")
    return {(m, int(v)): (t, json.loads(c)) for m, v, t, c in rows}


def _label(e: Entry, task: str, classes: list[Any], model: str, version: int) -> str:
    """The label as stored (JSON, comparable with the stored prediction), or a 422."""
    where = f"labels[{e.index}].label"
    if task == "regression":
        value = e.label
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(422, f"{where}: {model} version {version} predicts a number")
        if not math.isfinite(float(value)) or abs(float(value)) > FLOAT32_MAX:
            raise BadRequest(422, f"{where}: {value!r} is not a finite float32 number")
        return json.dumps(float(value))
    by_name = {str(c): c for c in classes}
    value = e.label
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if str(value) not in by_name:
        shown = ", ".join(map(str, classes[:10])) + (" …" if len(classes) > 10 else "")
        raise BadRequest(
            422, f"{where}: {e.label!r} is not a class of {model} version {version} ({shown})"
        )
    return json.dumps(by_name[str(value)])

"""A text corpus made from what is installed here (nothing downloaded): the summary and
the description paragraphs of every installed Python distribution that declares a Trove
topic, labelled by that topic. The same lock file gives the same corpus on every machine."""

from __future__ import annotations

import importlib.metadata
import re

import pandas as pd

# A distribution's label: the first of these topics it declares (the specific ones first).
TOPICS = ("Scientific/Engineering", "Internet", "Software Development")
PER_PACKAGE = 40  # paragraphs at most, so that no one README dominates
MIN_WORDS = 8


def _paragraphs(body: str) -> list[str]:
    found = []
    for block in re.split(r"\n\s*\n", body):
        text = re.sub(r"\s+", " ", block).strip()
        if len(text.split()) >= MIN_WORDS and not text.startswith(("..", "|", "```", ">>>", "$")):
            found.append(text)
    return found


def package_texts() -> pd.DataFrame:
    """Columns `package`, `text` and `topic`, in a fixed order."""
    rows = []
    dists = sorted(importlib.metadata.distributions(), key=lambda d: str(d.metadata.get("Name")))
    for dist in dists:
        meta = dist.metadata
        declared = {
            c.split(" :: ")[1] for c in meta.get_all("Classifier") or [] if c.startswith("Topic ::")
        }
        topic = next((t for t in TOPICS if t in declared), None)
        if topic is None:
            continue
        summary = str(meta.get("Summary") or "").strip()  # .get: missing keys raise in
        body = str(meta.get_payload() or meta.get("Description") or "")  # importlib_metadata
        texts = ([summary] if summary else []) + _paragraphs(body)[:PER_PACKAGE]
        rows += [(str(meta.get("Name")), text, topic) for text in texts]
    frame = pd.DataFrame(rows, columns=["package", "text", "topic"])
    return frame.drop_duplicates(subset=["text"]).reset_index(drop=True)

"""The model card a version shows in the MLflow UI: pure rendering from its record and
its ledger entries."""

from __future__ import annotations

import json

from registry.card import render_card
from registry.db.store import Entry, Version


def _version(**info: str) -> Version:
    base = {
        "mlops.family": "mlp",
        "mlops.task": "classification",
        "mlops.parameters": "50186",
        "mlops.git_commit": "0123456789abcdef",
        "mlops.git_dirty": "false",
        "mlops.data.train.md5": "a" * 32,
        "mlops.data.test.md5": "b" * 32,
        "mlops.params_hash": "c" * 64,
        "mlops.train_run_id": "d" * 32,
        "mlops.metric.test_accuracy": "0.9704",
        "mlops.metric.test_n_samples": "270",
    }
    return Version(
        "digits", 3, "r" * 32, "models:/m-1", "e" * 64, "f" * 64, "staging", 0.0,
        {**base, **info, "params": {"train.learning_rate": "0.001"}},
    )  # fmt: skip


def test_the_card_says_what_the_version_is_and_where_it_came_from() -> None:
    card = render_card(_version(), [])
    assert card.startswith("**digits version 3**: PyTorch mlp classification, 50,186 parameters.")
    assert "| accuracy | 0.9704 |" in card and "n_samples" not in card
    assert "`0123456789ab` (clean)" in card
    assert "train `aaaaaaaa`" in card and "test `bbbbbbbb`" in card
    assert "`learning_rate=0.001`" in card
    assert "Optuna" not in card and "Stages and gates" not in card


def test_the_card_lists_this_versions_stage_changes_and_their_gates() -> None:
    gates = [
        {"gate": "artifact integrity", "passed": True, "value": "", "threshold": ""},
        {"gate": "metric accuracy", "passed": True, "value": "0.97", "threshold": ">= 0.95"},
    ]
    entries = [
        Entry("promote", "digits", 3, "none", "staging", "alice", "first",
              {"gates": gates}, at=1_700_000_000.0),
        Entry("promote", "digits", 2, "none", "staging", "bob", "", {}, at=1.0),  # another
        Entry("promote", "digits", 3, "staging", "production", "bob", "", {"gates": gates},
              forced=True, outcome="done", at=1_700_000_100.0),
    ]  # fmt: skip
    card = render_card(_version(**{"mlops.optuna.study": "s", "mlops.optuna.trial": "7"}), entries)
    assert "study `s`, trial 7" in card
    section = card.split("**Stages and gates**", 1)[1]
    assert section.count("\n- ") == 2 and "bob: done; 2/2 gates passed" in section
    assert "**forced**" in section and "alice" in section and "— first" in section
    assert json.dumps(card)  # plain text

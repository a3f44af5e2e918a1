"""The pure parts of binding and auth: which addresses are loopback, the warnings of
`mlops serve` and `mlops server start`, and who may create which names under `--auth`."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.exposure import is_loopback, open_ui_warning
from mlops.server import auth, gate
from mlops.server.service import StartOptions, exposure


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.8.0.1", True), ("localhost", True), ("::1", True),
        ("[::1]", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False),
        ("", False), ("10.1.2.3", False), ("192.168.0.10", False), ("nosuch.invalid", False),
    ],
)  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_server_warns_beyond_loopback_without_auth() -> None:
    assert exposure(StartOptions(host="127.0.0.1")) is None
    assert exposure(StartOptions(host="0.0.0.0", auth_config=Path("users.yaml"))) is None
    line = exposure(StartOptions(host="0.0.0.0", port=5000))
    assert line is not None and "\n" not in line
    assert "every network interface, port 5000, without authentication" in line
    assert "--auth --auth-config FILE" in line
    other = exposure(StartOptions(host="10.1.2.3"))
    assert other is not None and "listens on 10.1.2.3" in other


def _config(tmp_path: Path, text: str) -> auth.AuthConfig:
    path = tmp_path / "users.yaml"
    path.write_text(text)
    return auth.load(path)


def test_only_edit_or_manage_grants_create_their_names(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "admin: {password: admin-secret-0123}\n"
        "users:\n"
        "  alice: {password: alice-secret-0123, experiments: {digits: EDIT, old: READ},"
        " registered_models: {digits: MANAGE, seen: READ}}\n"
        "  bob: {password: bob-secret-012345}\n"
        "  carol: {password: carol-secret-0123, experiments: {'*': EDIT}}\n",
    )
    rights = gate.Rights.from_json(auth.create_rights(config))
    assert not rights.everyone
    allowed = {
        (user, kind, name)
        for user in ("alice", "bob", "carol", "dave")
        for kind in (gate.EXPERIMENT, gate.MODEL, gate.DEMO)
        for name in ("digits", "old", "seen", "other", None)
        if rights.may_create(user, kind, name)
    }
    assert allowed == {
        ("alice", gate.EXPERIMENT, "digits"),
        ("alice", gate.MODEL, "digits"),
        *{("carol", gate.EXPERIMENT, name) for name in ("digits", "old", "seen", "other", None)},
    }
    assert "bob may not create registered model 'digits'" in gate.refusal("bob", gate.MODEL,
                                                                           "digits")  # fmt: skip
    assert "admins only" in gate.refusal("bob", gate.DEMO, None)


def test_an_open_default_lets_everyone_create(tmp_path: Path) -> None:
    config = _config(tmp_path, "admin: {password: admin-secret-0123}\ndefault_permission: EDIT\n")
    assert gate.Rights.from_json(auth.create_rights(config)).may_create("anyone", gate.MODEL, "x")


def test_the_server_config_names_the_gate_and_the_rights(tmp_path: Path) -> None:
    config = _config(tmp_path, "admin: {password: admin-secret-0123}\n")
    ini, env = auth.write_server_config(config, tmp_path)
    assert f"authorization_function = {gate.FUNCTION}" in ini.read_text()
    assert Path(env[gate.RIGHTS_ENV]).is_file()
    assert "admin-secret-0123" not in ini.read_text() + Path(env[gate.RIGHTS_ENV]).read_text()


def test_an_open_web_ui_is_warned_about_beyond_loopback() -> None:
    assert open_ui_warning("the MLflow UI", "127.0.0.1", 5000, "read runs") is None
    assert open_ui_warning("the MLflow UI", "localhost", 5000, "read runs") is None
    line = open_ui_warning("the MLflow UI", "0.0.0.0", 5000, "read runs")
    assert line is not None and "0.0.0.0:5000" in line and "read runs" in line
    assert "\n" not in line

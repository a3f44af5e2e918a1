"""`mlops server start|status|stop`: a real MLflow server process on SQLite and on
PostgreSQL, served artifacts, basic auth with users from a file (and who may create
which names), the warning for a server open to every interface, and bad input."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops.exposure import free_port
from tests.integration.sweep_project import clean_env

ADMIN_PW = "admin-secret-0123"
ALICE_PW = "alice-secret-0123"
BOB_PW = "bob-secret-012345"
CAROL_PW = "carol-secret-0123"
MLOPS = str(Path(sys.executable).parent / "mlops")


def mlops(root: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [MLOPS, *args], cwd=root, env=clean_env(env), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def status(root: Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    done = mlops(root, "server", "status", "--json", env=env)
    return done.returncode, json.loads(done.stdout)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _get_with_host(port: int, host: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1",
                     headers={"Host": host})  # fmt: skip
        return conn.getresponse().status
    finally:
        conn.close()


def one_error_line(done: Any) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return str(lines[0])


@pytest.fixture
def stopper(project: Path) -> Any:
    """Whatever a test started is stopped at the end (pass the env it was started with)."""
    envs: list[dict[str, str] | None] = []
    yield envs.append
    for env in envs:
        mlops(project, "server", "stop", env=env)


def warnings(done: Any) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("warning")]


def test_start_status_stop_with_served_artifacts(project: Path, stopper: Any) -> None:
    """On every interface without auth: it starts, and says so in one warning line."""

    port = free_port()
    stopper(None)
    done = mlops(project, "server", "start", "--host", "0.0.0.0", "--port", str(port))
    assert done.returncode == 0, done.stderr
    url = f"http://127.0.0.1:{port}"
    assert f"MLflow server: {url}" in done.stdout
    (warning,) = warnings(done)
    expected = f"listens on every network interface, port {port}, without authentication"
    assert warning.startswith("warning: --host 0.0.0.0: ") and expected in warning
    assert "--auth --auth-config FILE" in warning
    code, state = status(project)
    assert code == 0 and state["running"] and state["healthy"], state
    assert state["url"] == url and state["backend"].endswith("/.mlops/mlflow.db")

    again = mlops(project, "server", "start", "--port", str(free_port()))
    assert again.returncode == 1 and "already runs at " + url in one_error_line(again)

    # A client logs through the server; the artifact lands in the server's destination.
    client = MlflowClient(tracking_uri=url)
    experiment = client.create_experiment("served")
    run = client.create_run(experiment)
    (project / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(project / "note.txt"))
    assert client.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:")
    stored = list((project / ".mlops" / "artifacts").rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "hello"

    stopped = mlops(project, "server", "stop")
    assert stopped.returncode == 0 and f"stopped the server at {url}" in stopped.stdout
    assert not listening(port)
    code, state = status(project)
    assert code == 1 and not state["running"], state
    assert mlops(project, "server", "stop").stdout.strip() == "no server is running"


def test_killed_server_is_reported_and_cleaned(project: Path, stopper: Any) -> None:
    port = free_port()
    stopper(None)
    assert mlops(project, "server", "start", "--port", str(port)).returncode == 0
    _, state = status(project)
    os.killpg(state["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while listening(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    code, after = status(project)
    assert code == 1 and not after["running"] and "gone" in after["note"], after
    done = mlops(project, "server", "stop")
    assert done.returncode == 0 and "was not running" in done.stdout
    assert not (project / ".mlops" / "server" / "server.json").exists()
    # The port is free again: a new server starts on it.
    assert mlops(project, "server", "start", "--port", str(port)).returncode == 0


def test_bad_input_is_one_line_and_starts_nothing(project: Path) -> None:
    port = free_port()
    auth_file = project / "users.yaml"
    auth_file.write_text("admin: {password_env: MLOPS_TEST_ADMIN_PW}\n")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = [
        (["--port", str(port)], {"MLOPS_TRACKING_URI": "http://127.0.0.1:1"}, "is a server"),
        (["--port", str(port), "--artifacts-destination", "mlflow-artifacts:/x"], {}, "proxy"),
        (["--port", str(busy.getsockname()[1])], {}, "is not free"),
        (["--auth", "--auth-config", "missing.yaml"], {}, "missing.yaml: file not found"),
        (["--auth", "--auth-config", "users.yaml"], {}, "MLOPS_TEST_ADMIN_PW is not set"),
        (["--auth", "--auth-config", "users.yaml"], {"MLOPS_TEST_ADMIN_PW": "password1234"},
         "refusing a default password"),
        (["--auth", "--auth-config", "users.yaml"], {"MLOPS_TEST_ADMIN_PW": "short"},
         "at least 12 characters"),
    ]  # fmt: skip
    try:
        for args, env, expected in cases:
            done = mlops(project, "server", "start", *args, env=env)
            assert done.returncode == 2, (args, done.stdout, done.stderr)
            assert expected in one_error_line(done), (args, done.stderr)
            assert not (project / ".mlops" / "server" / "server.json").exists()
    finally:
        busy.close()
    auth_file.write_text("admin: {password: admin-secret-0123}\nusers: {eve: {passwd: x}}\n")
    done = mlops(project, "server", "start", "--auth", "--auth-config", "users.yaml")
    assert done.returncode == 2 and "users.eve.passwd: unknown key" in one_error_line(done)
    assert not listening(port)


def test_auth_on_postgresql_honours_registry_permissions(
    project: Path, pg_database: str, stopper: Any
) -> None:
    (project / "users.yaml").write_text(
        "admin: {password_env: TEST_ADMIN_PW}\n"
        "default_permission: READ\n"
        "users:\n"
        "  alice: {password_env: TEST_ALICE_PW, experiments: {digits: EDIT},"
        " registered_models: {digits: MANAGE}}\n"
        f"  bob: {{password: {BOB_PW}, registered_models: {{digits: READ}}}}\n"
    )
    env = {
        "MLOPS_TRACKING_URI": pg_database,
        "TEST_ADMIN_PW": ADMIN_PW,
        "TEST_ALICE_PW": ALICE_PW,
    }
    port = free_port()
    stopper(env)
    done = mlops(project, "server", "start", "--port", str(port), "--auth",
                 "--auth-config", "users.yaml", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "alice" in done.stdout and "registered model digits" in done.stdout
    assert ADMIN_PW not in done.stdout + done.stderr
    code, state = status(project, env)
    assert code == 0 and state["auth"] and state["backend"].startswith("postgresql://"), state
    url = state["url"]

    def client(user: str, password: str) -> MlflowClient:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            user, password,
        )  # fmt: skip
        return MlflowClient(tracking_uri=url, registry_uri=url)

    try:
        alice = client("alice", ALICE_PW)
        experiment = alice.get_experiment_by_name("digits")  # made at start for the grant
        assert experiment is not None
        run = alice.create_run(experiment.experiment_id)
        alice.create_registered_model("digits")
        version = alice.create_model_version(
            "digits", f"runs:/{run.info.run_id}/model", run.info.run_id
        )
        alice.set_registered_model_alias("digits", "production", version.version)

        bob = client("bob", BOB_PW)
        assert bob.get_registered_model("digits").aliases == {"production": version.version}
        with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|Permission denied"):
            bob.set_registered_model_alias("digits", "staging", version.version)
        with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|Permission denied"):
            bob.delete_registered_model_alias("digits", "production")
        with pytest.raises(MlflowException, match=r"Unauthenticated|401|credentials"):
            client("bob", "wrong-password-12").get_registered_model("digits")
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
    assert mlops(project, "server", "stop", env=env).returncode == 0


def as_user(url: str, user: str, password: str) -> Any:
    """An MLflow client that signs in as `user` (MLflow reads the credentials from the
    environment at each request)."""

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
        user, password,
    )  # fmt: skip
    return MlflowClient(tracking_uri=url, registry_uri=url)


def demo(url: str, user: str, password: str) -> tuple[int, str]:
    """POST MLflow's demo generator (it creates an experiment and prompts) as `user`."""

    request = urllib.request.Request(
        f"{url}/ajax-api/3.0/mlflow/demo/generate", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_only_granted_users_create_names(project: Path, stopper: Any) -> None:
    """MLflow alone lets a READ user create any experiment or registered model and so take
    a name before its owner; with `--auth` only a user granted EDIT or MANAGE on a name (or
    on `*`) in the users file, or an admin, creates it or renames something to it."""

    (project / "users.yaml").write_text(
        "admin: {password_env: TEST_ADMIN_PW}\n"
        "default_permission: READ\n"
        "users:\n"
        "  alice: {password_env: TEST_ALICE_PW, experiments: {digits: EDIT},"
        " registered_models: {digits: MANAGE}}\n"
        f"  bob: {{password: {BOB_PW}}}\n"
        f"  carol: {{password: {CAROL_PW}, experiments: {{'*': EDIT}},"
        " registered_models: {digits: READ}}\n"
    )
    env = {"TEST_ADMIN_PW": ADMIN_PW, "TEST_ALICE_PW": ALICE_PW}
    port = free_port()
    stopper(env)
    done = mlops(project, "server", "start", "--host", "0.0.0.0", "--port", str(port),
                 "--auth", "--auth-config", "users.yaml", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert warnings(done) == []  # every interface, but with auth
    url = f"http://127.0.0.1:{port}"
    denied = r"PERMISSION_DENIED|Permission denied"

    def client(user: str, password: str) -> MlflowClient:
        return as_user(url, user, password)

    try:
        bob = client("bob", BOB_PW)  # READ on everything, grants on nothing
        for name in ("digits", "squat"):  # `digits` before alice registered it
            with pytest.raises(MlflowException, match=denied) as caught:
                bob.create_registered_model(name)
            assert f"bob may not create registered model '{name}'" in str(caught.value)
            with pytest.raises(MlflowException, match=denied):
                bob.create_experiment(f"{name}-by-bob")
        status, answer = demo(url, "bob", BOB_PW)
        assert status == 403 and "admins only" in answer, (status, answer)
        assert bob.get_experiment_by_name("digits") is not None  # made at start; readable

        alice = client("alice", ALICE_PW)  # EDIT on experiment digits, MANAGE on model digits
        alice.create_registered_model("digits")
        with pytest.raises(MlflowException, match=denied):
            alice.create_registered_model("other")
        with pytest.raises(MlflowException, match=denied):
            alice.rename_registered_model("digits", "renamed")  # she manages it, not the name
        with pytest.raises(MlflowException, match=denied):
            alice.create_experiment("alice-new")

        carol = client("carol", CAROL_PW)  # EDIT on experiment `*`
        assert carol.create_experiment("carol-anything")
        with pytest.raises(MlflowException, match=denied):
            carol.create_registered_model("carol-model")

        admin = client("admin", ADMIN_PW)
        admin.create_registered_model("by-admin")
        assert admin.create_experiment("by-admin")

        bob = client("bob", BOB_PW)
        assert bob.get_registered_model("digits").name == "digits"  # reading stays open
        names = {m.name for m in bob.search_registered_models()}
        assert names == {"digits", "by-admin"}
        with pytest.raises(MlflowException, match=denied):
            bob.update_registered_model("digits", description="mine")  # READ writes nothing
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
    assert mlops(project, "server", "stop", env=env).returncode == 0


def test_foreground_server_stops_on_sigterm(project: Path) -> None:
    """As systemd and compose run it: attached, SIGTERM stops it and its state goes.
    `--allowed-hosts` adds a name to MLflow's defaults (localhost stays allowed)."""
    port = free_port()
    proc = subprocess.Popen(
        [MLOPS, "server", "start", "--foreground", "--port", str(port),
         "--allowed-hosts", "mlflow.team.example:*"], cwd=project,
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "MLflow server: " in line:
                break
        assert listening(port), "".join(seen)
        code, state = status(project)
        assert code == 0 and state["pid"] != proc.pid, state
        answers = {host: _get_with_host(port, host) for host in
                   ("localhost", f"127.0.0.1:{port}", f"mlflow.team.example:{port}",
                    f"evil.example:{port}")}  # fmt: skip
        assert answers == {
            "localhost": 200,
            f"127.0.0.1:{port}": 200,
            f"mlflow.team.example:{port}": 200,
            f"evil.example:{port}": 403,
        }
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "MLflow server stopped" in rest
    assert not listening(port)
    assert not (project / ".mlops" / "server" / "server.json").exists()


def test_port_0_picks_a_free_port_and_start_and_stop_report_json(
    project: Path, stopper: Any
) -> None:
    stopper(None)
    done = mlops(project, "server", "start", "--port", "0", "--json")
    assert done.returncode == 0, done.stderr
    started = json.loads(done.stdout)
    assert started["running"] and started["healthy"]
    port = int(started["url"].rsplit(":", 1)[1])
    assert port > 0 and listening(port)
    done = mlops(project, "server", "stop", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stopped"] is True
    assert not listening(port)

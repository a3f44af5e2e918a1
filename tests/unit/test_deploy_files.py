"""The service definitions in platform/deploy/ parse, agree with each other and with the
settings the code reads, and run commands that exist."""

from __future__ import annotations

import ast
import configparser
import inspect
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from typer.core import TyperGroup

from mlops.cli import _mount_subcommands, app
from mlops.scheduling.cron import parse
from mlops.scheduling.scheduler import STOP_WAIT_S
from mlops.server.process import STOP_GRACE_S, artifacts_destination, backend_store
from mlops.serving.cli import serve
from mlops.serving.metrics import NAMES
from mlops.settings import ENV_PREFIX, Settings
from mlops.tuning.storage import GRACE_S, HEARTBEAT_S

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "platform" / "deploy"
SOURCES = ("platform/mlops", "registry", "pipelines")
UNITS = ("mlops-db-upgrade.service", "mlops-server.service", "mlops-scheduler.service",
         "mlops-sweep-worker@.service")  # fmt: skip
# Each unit and the compose services that run the same thing: (unit, services, role).
ROLES = {
    "mlops-db-upgrade.service": ("migrate", "server"),
    "mlops-server.service": ("mlflow", "server"),
    "mlops-scheduler.service": ("scheduler", "client"),
    "mlops-sweep-worker@.service": ("sweep-worker", "client"),
}
ETC = "/etc/mlops/"


# --- reading the files ---------------------------------------------------------------


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit's sections as systemd reads them: a key given twice keeps both values."""
    checked = configparser.ConfigParser(strict=False, interpolation=None)
    checked.read_string((DEPLOY / name).read_text())  # raises on a malformed file
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in (DEPLOY / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep and not line.endswith("\\"), f"{name}: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _one(unit: Mapping[str, list[str]], key: str) -> str:
    (value,) = unit[key]
    return value


def _env_file(name: str) -> dict[str, str]:
    """KEY=VALUE lines that systemd's EnvironmentFile= and compose's env_file read alike."""
    found: dict[str, str] = {}
    for raw in (DEPLOY / name).read_text().splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S+", raw), f"{name}: {raw!r}"
        key, value = raw.split("=", 1)
        assert value[0] not in "'\"" and " #" not in value, f"{name}: {raw!r}"
        assert key not in found, f"{name}: {key} twice"
        found[key] = value
    return found


@cache
def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _service(name: str) -> dict[str, Any]:
    service = _compose()["services"][name]
    assert isinstance(service, dict)
    return service


def _env_files(unit: Mapping[str, Mapping[str, list[str]]]) -> list[str]:
    paths = unit["Service"]["EnvironmentFile"]
    assert all(p.startswith(ETC) for p in paths), paths  # not optional ("-"), absolute
    return [p.removeprefix(ETC) for p in paths]


def _merged(names: list[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in names:
        env.update(_env_file(name))
    return {**env, **(overrides or {})}


def _environment(unit_name: str, compose: bool) -> dict[str, str]:
    """The environment a unit's process, or that of its compose service, gets."""
    if compose:
        service = _service(ROLES[unit_name][0])
        return _merged(service["env_file"], service.get("environment"))
    unit = _unit(unit_name)
    set_here = dict(v.split("=", 1) for v in unit["Service"].get("Environment", []))
    return _merged(_env_files(unit), set_here)


# --- what the code reads --------------------------------------------------------------


class _Recording(Mapping[str, str]):
    """An empty environment that remembers what was asked of it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default


def _settings_names() -> dict[str, str]:
    """Settings field → the variable it is read from, as `Settings.from_env` asks for them."""
    env = _Recording()
    Settings.from_env(env, cwd=ROOT)
    names = {n for n in env.asked if n.startswith(ENV_PREFIX)}
    by_field = {
        f.name: f"{ENV_PREFIX}{f.name.upper()}" for f in fields(Settings) if f.name != "root"
    }
    assert names == set(by_field.values())
    return by_field


def _names_the_code_reads() -> set[str]:
    """`MLOPS_*` names: those of Settings, and every string constant (or f-string on
    ENV_PREFIX) in the sources that is exactly such a name."""
    names = set(_settings_names().values())
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                text = None
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    text = node.value
                elif isinstance(node, ast.JoinedStr) and len(node.values) == 2:
                    prefix, rest = node.values
                    if (
                        isinstance(prefix, ast.FormattedValue)
                        and isinstance(prefix.value, ast.Name)
                        and prefix.value.id == "ENV_PREFIX"
                        and isinstance(rest, ast.Constant)
                        and isinstance(rest.value, str)
                    ):
                        text = f"{ENV_PREFIX}{rest.value}"
                if text and re.fullmatch(rf"{ENV_PREFIX}[A-Z][A-Z0-9_]*", text):
                    names.add(text)
    return names


def _team_mode_names() -> dict[str, str]:
    """Settings whose embedded default is a SQLite file: team mode must set each one."""
    embedded = Settings.from_env({}, cwd=ROOT)
    return {
        field: name
        for field, name in _settings_names().items()
        if str(getattr(embedded, field)).startswith("sqlite:")
    }


@cache
def _cli() -> TyperGroup:
    _mount_subcommands()
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    return group


def _parse(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse `mlops ARGS` against the real CLI without running it: (command path, params).
    Raises the CLI's usage errors for an unknown option or a bad value."""
    assert args and args[0] == "mlops", args
    command: Any = _cli()
    ctx = typer.Context(command, info_name="mlops")
    path: list[str] = []
    rest = args[1:]
    while isinstance(command, TyperGroup):
        found = command.get_command(ctx, rest[0]) if rest else None
        assert found is not None, f"mlops {' '.join(path + rest[:1])}: no such command"
        path.append(rest.pop(0))
        command = found
    parsed = command.make_context(" ".join(path), rest, parent=ctx)
    return path, dict(parsed.params)


def _unit_command(unit_name: str) -> list[str]:
    unit = _unit(unit_name)
    env = _merged(_env_files(unit))
    command = shlex.split(_one(unit["Service"], "ExecStart"))
    binary = command[0]
    assert binary == f"{_one(unit['Service'], 'WorkingDirectory')}/.venv/bin/mlops"
    words = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], w) for w in command[1:]]
    return ["mlops", *words]


def _service_command(name: str) -> list[str]:
    command = list(_service(name)["command"])
    env = _merged(_service(name)["env_file"])
    if command[:2] == ["sh", "-c"]:  # variables of the container, from the env files
        script = shlex.split(command[2].replace("$$", "$"))
        assert script[0] == "exec"
        command = [re.sub(r"^\$(\w+)$", lambda m: env[m.group(1)], w) for w in script[1:]]
    return [str(word) for word in command]


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


# --- the tests -------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNITS)
def test_units_parse_and_run_a_real_command_as_the_service_user(name: str) -> None:
    unit = _unit(name)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert _one(service, "User") == "mlops"
    assert _one(service, "WorkingDirectory") == "/srv/mlops/project"
    if _one(service, "Type") != "oneshot":
        assert _one(service, "KillSignal") == "SIGTERM"
    assert _one(unit["Install"], "WantedBy") == "multi-user.target"
    assert "postgresql.service" in _one(unit["Unit"], "After").split()
    path, _ = _parse(_unit_command(name))
    assert path == _parse(_service_command(ROLES[name][0]))[0]  # compose runs the same


def test_each_unit_runs_what_its_name_says_and_waits_for_what_it_needs() -> None:
    commands = {name: _parse(_unit_command(name)) for name in UNITS}
    assert commands["mlops-db-upgrade.service"][0] == ["db", "upgrade"]
    assert commands["mlops-scheduler.service"][0] == ["scheduler", "start"]
    assert commands["mlops-sweep-worker@.service"][0] == ["sweep", "worker"]
    path, server = commands["mlops-server.service"]
    assert path == ["server", "start"] and server["foreground"] and server["host"] == "0.0.0.0"
    upgrade = _unit("mlops-db-upgrade.service")
    assert _one(upgrade["Service"], "Type") == "oneshot"
    unit = _unit("mlops-server.service")
    required = _one(unit["Unit"], "Requires").split()
    assert {"postgresql.service", "mlops-db-upgrade.service"} <= set(required)
    assert set(required) <= set(_one(unit["Unit"], "After").split())
    # Served artifacts live in the unit's StateDirectory (/var/lib/<name>).
    state = f"/var/lib/{_one(unit['Service'], 'StateDirectory')}/"
    assert urlsplit(server["artifacts_destination"]).path.startswith(state)
    for name in ("mlops-scheduler.service", "mlops-sweep-worker@.service"):
        wants = _one(_unit(name)["Unit"], "Wants").split()  # Wants: absent on other hosts
        assert "mlops-server.service" in wants
        assert "mlops-server.service" in _one(_unit(name)["Unit"], "After").split()


def test_sweep_workers_aim_at_a_study_total_with_seeds_of_their_own() -> None:
    """A restarted worker adds no trials (`--total`, not `--trials`, which means new
    trials); each systemd instance of each host has its own sampler seed."""
    env = _merged(_env_files(_unit("mlops-sweep-worker@.service")))
    for command in (_unit_command("mlops-sweep-worker@.service"), _service_command("sweep-worker")):
        path, options = _parse(command)
        assert path == ["sweep", "worker"]
        assert options["total"] == int(env["SWEEP_TRIALS"]) and options["trials"] is None
        assert options["study"] == env["SWEEP_STUDY"]
    _, unit = _parse(_unit_command("mlops-sweep-worker@.service"))
    assert "%i" in unit["worker"] and "%l" in unit["worker"]  # instance and host


def test_stop_timeouts_cover_the_code_own_graceful_stops() -> None:
    waits = {
        "mlops-server.service": STOP_GRACE_S,  # mlops stops the server: SIGTERM, then SIGKILL
        "mlops-scheduler.service": STOP_WAIT_S,  # the scheduler waits for its runs
        "mlops-sweep-worker@.service": GRACE_S + 4 * HEARTBEAT_S,  # the study's heartbeats
    }
    for name, wait in waits.items():
        service = _unit(name)["Service"]
        assert _one(service, "KillMode") == "mixed"  # SIGTERM to mlops, which stops the rest
        assert int(_one(service, "TimeoutStopSec")) > wait, name
        assert _one(service, "Restart") == "on-failure"
        compose = _service(ROLES[name][0])
        assert compose["init"] is True  # signals reach mlops, not a PID 1 that ignores them
        assert _seconds(compose["stop_grace_period"]) > wait, name


def test_every_mlops_variable_set_is_one_the_code_reads() -> None:
    known = _names_the_code_reads()
    set_anywhere: dict[str, str] = {}
    for name in ("mlops.env", "mlops-server.env"):
        set_anywhere |= dict.fromkeys(_env_file(name), name)
    for name in UNITS:
        for value in _unit(name)["Service"].get("Environment", []):
            set_anywhere[value.split("=", 1)[0]] = name
    for name, service in _compose()["services"].items():
        set_anywhere |= dict.fromkeys(service.get("environment", {}), f"compose {name}")
    ours = {k: where for k, where in set_anywhere.items() if k.startswith(ENV_PREFIX)}
    assert ours
    assert not {k: where for k, where in ours.items() if k not in known}


@pytest.mark.parametrize("compose", [False, True], ids=["systemd", "compose"])
@pytest.mark.parametrize("unit_name", UNITS)
def test_every_process_gets_the_team_mode_stores(unit_name: str, compose: bool) -> None:
    env, role = _environment(unit_name, compose), ROLES[unit_name][1]
    where = ROLES[unit_name][0] if compose else unit_name
    required = _team_mode_names()
    assert set(required) == {"tracking_uri", "optuna_storage", "database_url"}
    missing = [name for name in required.values() if name not in env]
    assert not missing, f"{where}: {missing}"
    settings = Settings.from_env(env, cwd=ROOT)
    databases = set()
    for field in ("optuna_storage", "database_url"):
        databases.add(urlsplit(getattr(settings, field)).path)
    if role == "client":
        assert urlsplit(settings.tracking_uri).scheme == "http", where
        assert settings.artifact_root == "mlflow-artifacts:/"  # through the server
    else:
        backend = backend_store(settings)  # refuses a server URL
        databases.add(urlsplit(backend).path)
        assert artifacts_destination(settings, "file:///var/lib/mlops/artifacts")
    urls = [env[name] for name in required.values() if env[name].startswith("postgresql")]
    for url in urls:
        parts = urlsplit(url)
        assert parts.scheme == "postgresql" and parts.hostname and parts.port == 5432, url
        assert parts.username == "mlops" and parts.password is None, url  # PGPASSWORD has it
    assert "CHANGE-ME" in env["PGPASSWORD"]  # a placeholder, marked
    assert len(databases) == len(urls)  # MLflow and Optuna both keep `alembic_version`


def test_databases_named_in_the_settings_are_created_by_the_init_script() -> None:
    init = (DEPLOY / "postgres-init.sql").read_text()
    created = set(re.findall(r"CREATE DATABASE (\w+) OWNER mlops", init))
    used = {
        urlsplit(url).path.strip("/")
        for name in ("mlops.env", "mlops-server.env")
        for url in _env_file(name).values()
        if url.startswith("postgresql://")
    }
    assert used == created == {"mlflow", "optuna", "mlops"}
    postgres = _service("postgres")
    assert "./postgres-init.sql:/docker-entrypoint-initdb.d/10-mlops.sql:ro" in postgres["volumes"]
    assert postgres["environment"]["POSTGRES_USER"] == "mlops"
    assert postgres["environment"]["POSTGRES_DB"] in created
    assert "PGPASSWORD" in " ".join(postgres["entrypoint"])  # the password of mlops.env


def test_compose_changes_only_the_hosts_of_the_env_files_urls() -> None:
    services = _compose()["services"]
    for unit_name, (name, _role) in ROLES.items():
        service = services[name]
        assert service["env_file"] == _env_files(_unit(unit_name))  # same files, same order
        from_files = _merged(service["env_file"])
        for key, value in service["environment"].items():
            ours, theirs = urlsplit(value), urlsplit(from_files[key])
            assert ours.hostname in services, f"{name}: {key}={value}"
            assert ours._replace(netloc="") == theirs._replace(netloc="")
            assert (ours.username, ours.port) == (theirs.username, theirs.port)


def test_compose_file_has_the_services_built_from_one_dockerfile() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "mlflow", "scheduler", "sweep-worker"}
    builds = {str(s["build"]) for n, s in services.items() if n != "postgres"}
    build = services["mlflow"]["build"]
    assert len(builds) == 1 and (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert "/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    assert services["mlflow"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    for name in ("scheduler", "sweep-worker"):
        assert services[name]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert services["sweep-worker"]["deploy"]["replicas"] >= 1
    assert "hostname" not in services["sweep-worker"]  # replicas: one hostname each
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert {n for n in named if not n.startswith(".")} == set(compose["volumes"])
    _, server = _parse(_service_command("mlflow"))
    mounts = dict(v.split(":")[:2] for v in services["mlflow"]["volumes"])
    assert urlsplit(server["artifacts_destination"]).path == mounts["artifacts"]


def test_dockerfile_installs_the_locked_cpu_torch_and_the_project_in_app() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lock = (ROOT / "requirements.lock").read_text()
    (torch,) = re.findall(r"^torch==(\S+)$", lock, flags=re.M)
    assert text.startswith("#") and "\nFROM python:3.11-slim\n" in text
    assert f"torch=={torch} --index-url https://download.pytorch.org/whl/cpu" in text
    assert "-c requirements.lock" in text and "COPY --chown=mlops:mlops . /app" in text
    assert "\nWORKDIR /app\n" in text and "\nUSER mlops\n" in text


def test_crontab_lines_are_valid_cron_running_run_now() -> None:
    lines = [
        line
        for line in (DEPLOY / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert lines
    for line in lines:
        fields_ = line.split(None, 5)
        parse(" ".join(fields_[:5]))  # raises on a bad expression
        command = fields_[5]
        assert "mlops schedule run-now " in command
        assert "--from-cron" in command
        words = shlex.split(command.split(".venv/bin/mlops", 1)[1].split(">>")[0])
        assert _parse(["mlops", *words])[0] == ["schedule", "run-now"]


# --- serving: Prometheus scrape config and Grafana dashboard -------------------------

SERVING_LABELS = {"endpoint", "status", "model", "version", "class", "stage", "backend",
                  "sha256", "le"}  # fmt: skip


def test_prometheus_config_scrapes_mlops_serve_on_its_default_port() -> None:

    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "mlops-serve"]
    defaults = inspect.signature(serve).parameters
    target = f"{defaults['host'].default}:{defaults['port'].default}"
    assert target == "127.0.0.1:8000"
    assert job["metrics_path"] == "/metrics"
    assert [t for c in job["static_configs"] for t in c["targets"]] == [target]


def test_grafana_dashboard_charts_metrics_the_server_exports() -> None:

    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bmlops_\w+", e)}
    series = {f"{n}_{s}" for n in NAMES for s in ("bucket", "sum", "count")} | set(NAMES)
    assert used and used <= series, used - series
    wanted = {"mlops_requests_total", "mlops_request_latency_seconds_bucket",
              "mlops_batch_size_bucket", "mlops_predictions_total",
              "mlops_model_version"}  # fmt: skip
    assert wanted <= used
    labels = {lab for e in exprs for group in re.findall(r"by \(([^)]*)\)", e)
              for lab in map(str.strip, group.split(","))}  # fmt: skip
    labels |= {lab for e in exprs for lab in re.findall(r"(\w+)=~?\"", e)}
    assert labels <= SERVING_LABELS, labels - SERVING_LABELS
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels)

"""MLflow basic auth for `mlops server start --auth`: users and grants from one file.

The users file (YAML) names the admin, the default permission and every user with
their password (from an environment variable, never stored in the file unless you
insist) and their permissions on experiments and registered models:

    admin: {username: admin, password_env: MLOPS_ADMIN_PASSWORD}
    default_permission: READ
    users:
      alice:
        password_env: ALICE_PASSWORD
        experiments: {digits: EDIT}
        registered_models: {digits: MANAGE}

At start the file is checked (one line per mistake, before anything starts), MLflow's
auth config is written under `<home>/server/`, and once the server answers the users
and grants are made to match the file through MLflow's auth REST API. The experiments
the file names are created then, by the admin (their grants need their ids).

Creating an experiment or a registered model (or renaming one to a name) takes EDIT or
MANAGE on that name, or on `*`, in this file (`gate`: MLflow alone lets any signed-in
user create any name and so take it before its owner).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlops import safe_yaml
from mlops.db import driver_url
from mlops.errors import MlopsError, UserError
from mlops.io import write_bytes, write_json
from mlops.params import describe_error
from mlops.server import gate

Permission = Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]
# MLflow's historical default admin password (GHSA-gq3w-7jj3-x7gr) and other obvious ones.
REFUSED_PASSWORDS = frozenset({"password1234", "password", "admin", "changeme", "mlflow"})
MIN_PASSWORD = 12
CREATING = ("EDIT", "MANAGE")  # the grants that let a user create the name they cover


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Secret(_Strict):
    """A password given by environment variable (`password_env`) or literally."""

    password_env: str | None = None
    password: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Secret:
        if (self.password_env is None) == (self.password is None):
            raise ValueError("give exactly one of password_env, password")
        return self

    def resolve(self, where: str) -> str:
        if self.password_env is not None:
            value = os.environ.get(self.password_env, "")
            if not value:
                raise UserError(f"{where}.password_env: {self.password_env} is not set")
        else:
            value = self.password or ""
        if value in REFUSED_PASSWORDS:
            raise UserError(f"{where}: refusing a default password; choose your own")
        if len(value) < MIN_PASSWORD:
            raise UserError(f"{where}: the password must have at least {MIN_PASSWORD} characters")
        return value


class Admin(Secret):
    username: Name = "admin"


class User(Secret):
    admin: bool = False
    experiments: dict[str, Permission] = {}
    registered_models: dict[str, Permission] = {}


class AuthFile(_Strict):
    admin: Admin
    default_permission: Permission = "READ"
    database: str | None = None
    users: dict[Name, User] = {}


@dataclass(frozen=True)
class AuthConfig:
    """A checked users file, passwords resolved."""

    path: Path
    admin: str
    admin_password: str
    default_permission: str
    database: str | None
    users: dict[str, tuple[str, User]]


def load(path: Path) -> AuthConfig:
    """Read and check the users file; every problem is one `UserError` line naming it."""

    if not path.exists():
        raise UserError(f"{path}: file not found (--auth-config)")
    data = safe_yaml.load(path)  # a regular file, size, nesting and aliases bounded
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with admin, users")
    try:
        parsed = AuthFile.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{path}: {describe_error(exc.errors()[0])}") from None
    if parsed.admin.username in parsed.users:
        raise UserError(f"{path}: users.{parsed.admin.username}: that is the admin")
    admin_password = parsed.admin.resolve(f"{path}: admin")
    users = {
        name: (user.resolve(f"{path}: users.{name}"), user) for name, user in parsed.users.items()
    }
    return AuthConfig(
        path=path,
        admin=parsed.admin.username,
        admin_password=admin_password,
        default_permission=parsed.default_permission,
        database=parsed.database,
        users=users,
    )


def create_rights(config: AuthConfig) -> dict[str, Any]:
    """Who may create which experiments and registered models (`gate.Rights`' JSON)."""

    def creating(grants: dict[str, Permission]) -> list[str]:
        return sorted(name for name, permission in grants.items() if permission in CREATING)

    return {
        "everyone": config.default_permission in CREATING,
        "users": {
            name: {
                gate.EXPERIMENT: creating(user.experiments),
                gate.MODEL: creating(user.registered_models),
            }
            for name, (_, user) in config.users.items()
        },
    }


def write_server_config(config: AuthConfig, folder: Path) -> tuple[Path, dict[str, str]]:
    """MLflow's auth .ini (no password in it), the create rights, and the environment that
    carries them to the server."""
    database = config.database or f"sqlite:///{(folder / 'auth.db').resolve()}"

    text = (
        "[mlflow]\n"
        f"default_permission = {config.default_permission}\n"
        f"database_uri = {driver_url(database).replace('%', '%%')}\n"
        f"admin_username = {config.admin}\n"
        f"authorization_function = {gate.FUNCTION}\n"
    )
    ini = folder / "basic_auth.ini"
    write_bytes(ini, text.encode())
    ini.chmod(0o600)
    rights = folder / "create_rights.json"
    write_json(rights, create_rights(config))
    env = {
        gate.RIGHTS_ENV: str(rights.resolve()),
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": config.admin,
        "MLFLOW_AUTH_ADMIN_PASSWORD": config.admin_password,
    }
    return ini, env


class AuthApi:
    """MLflow's auth REST API, called as the admin."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, ok: tuple[int, ...] = ()
    ) -> tuple[int, dict[str, Any]]:
        """One request; HTTP errors other than the `ok` ones become `MlopsError`."""
        url = f"{self.url}{path}"
        data = None
        if method == "GET" and body:
            url += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw.strip() else {}
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw) if raw.strip() else {}
            except ValueError:
                payload = {"message": raw.decode(errors="replace")[:200]}
            if exc.code in ok:
                return exc.code, payload
            if exc.code == 401:
                raise MlopsError(
                    "auth: the server refused the admin's password; MLflow keeps the admin "
                    "password of its first start (change it there or start on a new auth "
                    "database)"
                ) from None
            message = str(payload.get("message", "")).splitlines()[0:1]
            raise MlopsError(f"auth: {method} {path}: HTTP {exc.code} {''.join(message)}") from None


def _experiment_id(api: AuthApi, name: str) -> str:
    code, found = api.call(
        "GET", "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": name}, ok=(404,)
    )
    if code == 200:
        return str(found["experiment"]["experiment_id"])
    _, made = api.call("POST", "/api/2.0/mlflow/experiments/create", {"name": name})
    return str(made["experiment_id"])


def _grant(api: AuthApi, user: str, kind: str, resource: str, permission: str) -> None:
    body = {"username": user, "resource_type": kind, "resource_id": resource}
    path = "/api/3.0/mlflow/users/permissions"
    code, _ = api.call("POST", f"{path}/grant", body | {"permission": permission}, ok=(400, 409))
    if code != 200:  # already granted (possibly at another level): replace it
        api.call("POST", f"{path}/revoke", body)
        api.call("POST", f"{path}/grant", body | {"permission": permission})


def sync(api: AuthApi, config: AuthConfig) -> list[tuple[str, str, str]]:
    """Make the server's users and grants match the file; return (user, what, detail) rows."""
    api.call("GET", "/api/2.0/mlflow/users/get", {"username": config.admin})
    done: list[tuple[str, str, str]] = []
    users = "/api/2.0/mlflow/users"
    for name, (password, user) in config.users.items():
        code, _ = api.call("GET", f"{users}/get", {"username": name}, ok=(404,))
        credentials = {"username": name, "password": password}
        if code == 404:
            api.call("POST", f"{users}/create", credentials)
            done.append((name, "created", "admin" if user.admin else "user"))
        else:
            api.call("PATCH", f"{users}/update-password", credentials)
            done.append((name, "updated", "admin" if user.admin else "user"))
        api.call("PATCH", f"{users}/update-admin", {"username": name, "is_admin": user.admin})
        for experiment, permission in user.experiments.items():
            resource = "*" if experiment == "*" else _experiment_id(api, experiment)
            _grant(api, name, "experiment", resource, permission)
            done.append((name, f"experiment {experiment}", permission))
        for model, permission in user.registered_models.items():
            _grant(api, name, "registered_model", model, permission)
            done.append((name, f"registered model {model}", permission))
    return done

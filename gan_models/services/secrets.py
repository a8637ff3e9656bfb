"""The team services' credentials: the environment first, then a secrets file outside the checkout.

The file (default ``~/.config/ganops/secrets.env``, or ``$GANOPS_SECRETS_FILE``) holds
``NAME=value`` lines and is readable by its owner only (0600, in a 0700 folder). ``ganops up
--team`` creates it with random values for what it is missing, written atomically, so a crash
never leaves half a file; values already there, or set in the environment, are kept. Nothing
here is ever written to a params file, a log or MLflow.
"""

from __future__ import annotations

import os
import secrets as _random
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gan_models.errors import ConfigError, GanopsError
from gan_models.utils.io import atomic_path

ENV_FILE = "GANOPS_SECRETS_FILE"
DEFAULT_FILE = "~/.config/ganops/secrets.env"

# Each credential the team services use, and whether ganops may make one up when it is missing.
PG_SUPERUSER = "GANOPS_PG_SUPERUSER_PASSWORD"
PG_PASSWORDS = {  # the password of each service's role
    "prefect": "GANOPS_PG_PREFECT_PASSWORD",
    "mlflow": "GANOPS_PG_MLFLOW_PASSWORD",
    "mlflow_auth": "GANOPS_PG_MLFLOW_AUTH_PASSWORD",
    "optuna": "GANOPS_PG_OPTUNA_PASSWORD",
}
PREFECT_PASSWORD = "GANOPS_PREFECT_PASSWORD"
MLFLOW_ADMIN_PASSWORD = "GANOPS_MLFLOW_ADMIN_PASSWORD"
MLFLOW_SECRET_KEY = "GANOPS_MLFLOW_FLASK_SECRET_KEY"
S3_KEY_ID = "AWS_ACCESS_KEY_ID"
S3_SECRET = "AWS_SECRET_ACCESS_KEY"
ALL = (PG_SUPERUSER, *PG_PASSWORDS.values(), PREFECT_PASSWORD, MLFLOW_ADMIN_PASSWORD,
       MLFLOW_SECRET_KEY, S3_KEY_ID, S3_SECRET)  # fmt: skip


def secrets_path() -> Path:
    return Path(os.environ.get(ENV_FILE) or DEFAULT_FILE).expanduser()


def _parse(path: Path) -> dict[str, str]:
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        if not eq or not name.strip():
            raise ConfigError(f"{path}: line {n}: expected NAME=value")
        out[name.strip()] = value.strip()
    return out


def _generated(name: str) -> str:
    if name == S3_KEY_ID:
        return "GANOPS" + _random.token_hex(7).upper()  # looks like an access key id: 20 chars
    # URL-safe, so every value can sit in a database URL or a Basic auth string unquoted.
    return _random.token_urlsafe(24).replace("-", "x").replace("_", "y")


def _write(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_path(path) as tmp:
        os.chmod(tmp, 0o600)  # before the secrets go in, not after
        tmp.write_text(
            "# ganops team services: credentials (owner-only; see docs/team.md)\n"
            + "".join(f"{k}={v}\n" for k, v in values.items())
        )


@dataclass(frozen=True)
class Secrets:
    """The credentials, by name, and the file they came from."""

    values: dict[str, str]
    path: Path

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def all_values(self) -> set[str]:
        return {v for v in self.values.values() if v}


def load_secrets(
    create: bool = False, required: Iterable[str] = ALL, generate: Iterable[str] = ALL
) -> Secrets:
    """The credentials in ``required``: each from the environment, else from the secrets file.

    With ``create``, those missing from both and named in ``generate`` are made up and written
    to the file (created with mode 0600); others missing are an error naming them.
    """
    path = secrets_path()
    stored: dict[str, str] = {}
    if path.is_file():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise GanopsError(
                f"{path}: readable by others (mode {mode:o}); chmod 600 it, since it holds "
                "the team services' credentials"
            )
        stored = _parse(path)
    values = {}
    missing = []
    for name in required:
        value = os.environ.get(name) or stored.get(name)
        if value:
            values[name] = value
        elif create and name in set(generate):
            values[name] = stored[name] = _generated(name)
        else:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"{path}: missing {', '.join(missing)}; set them in the environment or in this "
            "file" + ("" if create else " (`ganops up --team` creates what it can)")
        )
    if create and (not path.is_file() or set(stored) - set(_parse(path))):
        _write(path, stored)
    return Secrets(values, path)

"""``params/services.yaml``: where the team services live (typed, unknown keys refused).

``mode: local`` (the default) is what ``ganops up`` has always started: sqlite stores and local
artifacts on 127.0.0.1, no credentials. ``mode: team`` puts the Prefect API, the MLflow backend
store and artifact store, the Optuna storage and the DVC remote on PostgreSQL and an S3 endpoint,
each behind credentials. PostgreSQL and the S3 endpoint are either started by ``ganops up``
(``start: true``: ``initdb`` in a data directory; ``rclone serve s3`` over a directory) or existing
ones given by address; ganops needs nothing from them but "a PostgreSQL address" and "an S3
endpoint URL plus keys".

No credential is ever read from this file: they come from the environment or the secrets file
(:mod:`.secrets`). A key here that looks like one (``password``, ``secret``, ``key``) is an
unknown key like any other.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gan_models.config import Section, read_params_yaml, validate_model
from gan_models.errors import ConfigError

DEFAULT_FILE = "params/services.yaml"


class PostgresConfig(Section):
    """The PostgreSQL server that holds the Prefect, MLflow and Optuna databases."""

    start: bool = Field(True, description="start our own from initdb (else: an existing server)")
    data_dir: str = Field(
        ".ganops/postgres", description="its data directory (start: true), owned by postgres"
    )
    host: str | None = Field(
        None, description="an existing server's address (start: false); ours listens on bind"
    )
    port: int = Field(5432, ge=1, le=65535)
    superuser: str = Field(
        "postgres",
        description="the role that creates the service roles and databases; its password is "
        "GANOPS_PG_SUPERUSER_PASSWORD (secrets file or environment)",
    )


class S3Config(Section):
    """The S3 endpoint of the MLflow artifacts and the DVC remote."""

    start: bool = Field(
        True, description="serve `directory` with `rclone serve s3` (else: an existing endpoint)"
    )
    directory: str = Field(".ganops/s3", description="what rclone serves (start: true)")
    port: int = Field(9000, ge=1, le=65535, description="rclone's port (start: true)")
    endpoint_url: str | None = Field(
        None, description="an existing endpoint (start: false), e.g. https://s3.example.org"
    )
    bucket: str = Field("ganops", min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+$")
    region: str = "us-east-1"


class PrefectConfig(Section):
    port: int = Field(4200, ge=1, le=65535)
    username: str = Field("ganops", min_length=1, description="user of the API's auth string")


class MlflowConfig(Section):
    port: int = Field(5000, ge=1, le=65535)
    admin_username: str = Field("admin", min_length=1)
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="extra Host header values the server accepts (names clients use); the "
        "bind and advertised addresses are always allowed",
    )


class DvcConfig(Section):
    remote: str = Field("team", pattern=r"^[A-Za-z0-9_-]+$", description="DVC remote name")
    prefix: str = Field("dvc", description="key prefix in the bucket: s3://BUCKET/PREFIX")
    default: bool = Field(True, description="make it the project's default remote")


class ServicesConfig(Section):
    """``params/services.yaml``."""

    mode: Literal["local", "team"] = "local"
    bind: str = Field("127.0.0.1", description="the address every server listens on")
    advertise: str | None = Field(
        None,
        description="the address or name clients use (default: bind; this host's name when "
        "bind is 0.0.0.0)",
    )
    postgres: PostgresConfig = PostgresConfig()
    s3: S3Config = S3Config()
    prefect: PrefectConfig = PrefectConfig()
    mlflow: MlflowConfig = MlflowConfig()
    dvc: DvcConfig = DvcConfig()

    @model_validator(mode="after")
    def _checked(self) -> ServicesConfig:
        try:
            address = ipaddress.ip_address(self.bind)
        except ValueError:
            raise ValueError(f"bind: expected an IP address, got {self.bind!r}") from None
        if self.mode == "local" and not address.is_loopback:
            # local mode asks for no credentials, so it must not be reachable from elsewhere
            raise ValueError(
                f"bind: {self.bind} is reachable from other hosts, and mode: local has no "
                "authentication; use mode: team (credentials on every service) or 127.0.0.1"
            )
        if not self.postgres.start and not self.postgres.host:
            raise ValueError("postgres.host: expected the address of the existing server "
                             "(postgres.start is false)")  # fmt: skip
        if not self.s3.start and not self.s3.endpoint_url:
            raise ValueError("s3.endpoint_url: expected the URL of the existing endpoint "
                             "(s3.start is false)")  # fmt: skip
        ports = {
            "prefect.port": self.prefect.port,
            "mlflow.port": self.mlflow.port,
            **({"postgres.port": self.postgres.port} if self.postgres.start else {}),
            **({"s3.port": self.s3.port} if self.s3.start else {}),
        }
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port in seen:
                raise ValueError(f"{key}: port {port} is also {seen[port]}")
            seen[port] = key
        return self

    # Where clients reach the servers.
    @property
    def public_host(self) -> str:
        if self.advertise:
            return self.advertise
        return socket.gethostname() if self.bind in ("0.0.0.0", "::") else self.bind

    @property
    def pg_host(self) -> str:
        return self.public_host if self.postgres.start else str(self.postgres.host)

    @property
    def s3_endpoint(self) -> str:
        if self.s3.start:
            return f"http://{self.public_host}:{self.s3.port}"
        return str(self.s3.endpoint_url).rstrip("/")

    @property
    def prefect_url(self) -> str:
        return f"http://{self.public_host}:{self.prefect.port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.public_host}:{self.mlflow.port}"

    def path(self, root: Path, value: str) -> Path:
        """A directory of this file, relative to the project root unless absolute."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else root / p


def load_services_config(path: str | Path) -> ServicesConfig:
    """Read and check a services file; every error names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found (expected a services file, see docs/team.md)")
    data = read_params_yaml(path)
    return validate_model(ServicesConfig, data, str(path))

"""What the team-mode tests share: a second host in a network namespace, and `ganops up` of the
team services in a scratch project bound to the root-side veth address.

Everything is real and started here: PostgreSQL from initdb, `rclone serve s3`, the Prefect and
MLflow servers; `ganops up` and `ganops down` run as the installed entry point. Needs root
(network namespaces, PostgreSQL run as the postgres user).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from gan_models.services.secrets import ALL as SECRET_NAMES
from gan_models.services.state import load_state
from gan_models.tracking.server import free_port, stop_process

GANOPS = Path(sys.executable).parent / "ganops"
ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and iproute2 (network namespaces, PostgreSQL as the postgres user)",
)
QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}
CLIENT_KEYS = {"PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_URI",
               "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "GANOPS_OPTUNA_STORAGE",
               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
               "AWS_DEFAULT_REGION", "GANOPS_CHECKPOINT_STORE"}  # fmt: skip


def sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)
    if check and out.returncode:
        raise AssertionError(f"{' '.join(cmd)} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def clean_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **QUIET, **extra}
    for k in CLIENT_KEYS | set(SECRET_NAMES):
        if k not in extra:
            env.pop(k, None)
    return env


# ----------------------------------------------------------------------------- second host


def _taken_addresses() -> set[str]:
    out = sh("ip", "-o", "-4", "addr", "show").stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines()}


@contextlib.contextmanager
def namespace_host(prefix: str, subnet: str) -> Iterator[tuple[str, str, str]]:
    """A network namespace with a veth pair to this one: (namespace, root address, its address).

    A random /30 of ``subnet``.0/24 that no interface holds yet, so runs beside each other (or
    another test's namespace in the same range) do not collide. Names are ``PREFIX-TAG``."""
    tag = f"{os.getpid() % 100000:05d}{random.randrange(100):02d}"
    short = "".join(w[0] for w in prefix.split("-"))[:3]
    ns, here, there = f"{prefix}-{tag}", f"{short}a{tag}", f"{short}b{tag}"
    taken = _taken_addresses()
    blocks = [b for b in range(1, 63) if f"{subnet}.{4 * b + 1}" not in taken]
    block = random.choice(blocks)
    a, b = f"{subnet}.{4 * block + 1}", f"{subnet}.{4 * block + 2}"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        sh("ip", "link", "set", there, "netns", ns)
        sh("ip", "addr", "add", f"{a}/30", "dev", here)
        sh("ip", "link", "set", here, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{b}/30", "dev", there)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", there, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, a, b
    finally:
        kill_namespace(ns)
        sh("ip", "link", "del", here, check=False)
        sh("ip", "netns", "del", ns, check=False)


def kill_namespace(ns: str) -> list[int]:
    """SIGKILL every process in the namespace (its host dies); returns their PIDs."""
    pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    return pids


# ----------------------------------------------------------------------------- the services


class Team:
    """The scratch project, its services file and secrets, and the client environment."""

    def __init__(self, root: Path, services: Path, secrets: Path, bind: str, ports: dict):
        self.root, self.services, self.secrets, self.bind, self.ports = (
            root, services, secrets, bind, ports,
        )  # fmt: skip
        self.client: dict[str, str] = {}
        self.up_output = ""

    def ganops(self, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
        env = clean_env(GANOPS_SECRETS_FILE=str(self.secrets), **extra)
        return sh(str(GANOPS), *args, "--root", str(self.root), check=check, env=env,
                  cwd=self.root, timeout=400)  # fmt: skip

    def secret_values(self) -> dict[str, str]:
        out = {}
        for line in self.secrets.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                out[k] = v
        return out


@contextlib.contextmanager
def team_services(
    bind: str, prefix: str, populate: Callable[[Path], None] | None = None
) -> Iterator[Team]:
    """`ganops up --services FILE` bound to ``bind`` in a scratch git + DVC project (filled by
    ``populate`` first); `ganops down` and removal of everything after."""
    # Not under pytest's 0700 temp folders: PostgreSQL runs as postgres and must reach its data.
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o755)
    root, secrets_dir = base / "proj", base / "home" / ".config" / "ganops"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    (root / ".gitignore").write_text(".ganops/\n")
    sh("git", "init", "-q", cwd=root)
    sh("git", "config", "user.email", "t@example.org", cwd=root)
    sh("git", "config", "user.name", "t", cwd=root)
    sh(sys.executable, "-m", "dvc", "init", "-q", cwd=root, env=clean_env())
    ports = {k: free_port(bind) for k in ("postgres", "s3", "prefect", "mlflow")}
    spec = {
        "mode": "team",
        "bind": bind,
        "postgres": {"start": True, "data_dir": str(base / "pgdata"), "port": ports["postgres"]},
        "s3": {
            "start": True,
            "directory": str(base / "s3"),
            "port": ports["s3"],
            "bucket": "ganops-test",
        },  # fmt: skip
        "prefect": {"port": ports["prefect"]},
        "mlflow": {"port": ports["mlflow"]},
    }
    services = root / "params" / "services.yaml"
    if populate is not None:
        populate(root)
    services.parent.mkdir(exist_ok=True)
    services.write_text(yaml.safe_dump(spec, sort_keys=False))
    t = Team(root, services, secrets_dir / "secrets.env", bind, ports)
    try:
        up = t.ganops("up", "--services", str(services), "--timeout", "180", check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        t.up_output = up.stdout + up.stderr
        env = t.ganops("env", "--services", str(services)).stdout
        for line in env.splitlines():
            k, v = line.removeprefix("export ").split("=", 1)
            t.client[k] = v.strip("'")
        yield t
    finally:
        t.ganops("down", check=False)
        for svc in load_state(root).values():  # anything `down` could not stop
            if svc.process() is not None:
                stop_process(svc.pid)
        shutil.rmtree(base, ignore_errors=True)

"""`ganops up --pool NAME` puts every deployment of prefect.yaml, and the worker, on that pool.

A real Prefect server on a free port, in a scratch copy of the project (its own state folder
and database); `ganops up` and `ganops down` run as the installed entry point.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from gan_models.services import read_deployments
from gan_models.tracking.server import free_port

REPO = Path(__file__).resolve().parents[1]
GANOPS = Path(sys.executable).parent / "ganops"
POOL = "night-shift"


def ganops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [str(GANOPS), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def project(tmp_path):
    """What `prefect deploy` reads: prefect.yaml, the flows it names and the params they read."""
    root = tmp_path / "proj"
    root.mkdir()
    for name in ("flows", "params"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("prefect.yaml", "pyproject.toml", "dvc.yaml"):
        shutil.copy(REPO / name, root / name)
    return root


def test_up_puts_every_deployment_and_the_worker_on_the_pool(project):
    spec = (project / "prefect.yaml").read_bytes()
    _, deployments = read_deployments(project)
    port = free_port()
    up = ganops(
        "up", "--root", str(project), "--pool", POOL, "--no-mlflow", "--prefect-port", str(port),
        "--limit", "1", "--timeout", "300", cwd=project,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        listed = ", ".join(str(d) for d in deployments)
        assert f"deployments of prefect.yaml on pool '{POOL}': {listed}" in up.stdout
        assert "retrain (schedule 0 3 * * 1)" in listed
        api = f"http://127.0.0.1:{port}/api"
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            stored = {d.name: d.work_pool_name for d in client.read_deployments()}
            assert stored == {d.name: POOL for d in deployments}
            assert client.read_work_pool(POOL).type == "process"
            assert [w.name for w in client.read_workers_for_work_pool(POOL)]
            pools = {p.name for p in client.read_work_pools()}
            assert "gpu" not in pools  # prefect.yaml's pool was never used
        assert (project / "prefect.yaml").read_bytes() == spec  # deployed from a copy
        assert not list((project / ".ganops").glob("prefect-deploy-*"))
    finally:
        down = ganops("down", "--root", str(project), cwd=project)
    assert down.returncode == 0 and "prefect: stopped" in down.stdout, down.stdout + down.stderr
    assert "worker: stopped" in down.stdout

"""Team mode (`ganops up --services FILE`): PostgreSQL from initdb, `rclone serve s3`, and the
Prefect and MLflow servers on them, each behind credentials, reached from a second host.

Everything is real and started here (tests/team_fixtures.py): a network namespace joined to
this one by a veth pair in 10.213.9.0/24 is the second host; the services bind the root-side veth
address, in a scratch project with its own secrets file, on free ports. `ganops up` and `ganops
down` run as the installed entry point. Needs root (network namespaces, PostgreSQL run as the
postgres user).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psutil
import psycopg2
import pytest
import yaml
from mlflow_server import tiny_params_yaml, write_bars
from team_fixtures import (
    CLIENT_KEYS,
    GANOPS,
    ROOT_ONLY,
    Team,
    clean_env,
    namespace_host,
    sh,
    team_services,
)

from gan_models.services.secrets import ALL as SECRET_NAMES
from gan_models.services.state import load_state
from gan_models.services.team import http_status
from gan_models.tracking.server import free_port


@pytest.fixture(scope="module")
def second_host():
    """A network namespace joined by a veth pair in 10.213.9.0/24: (namespace, root address,
    its address)."""
    with namespace_host("ganops-team", "10.213.9") as host:
        yield host


@pytest.fixture(scope="module")
def team(second_host):
    """`ganops up --services FILE` bound to the root-side veth address; `ganops down` after."""
    with team_services(second_host[1], "ganops-team-") as t:
        yield t


# ----------------------------------------------------------------------------- the checks

# One request per service, run here or inside the namespace: (name, refused?, accepted?).
PROBE = textwrap.dedent(
    """
    import base64, json, os, sys, urllib.error, urllib.request
    import boto3, psycopg2
    from botocore import UNSIGNED
    from botocore.config import Config

    e = os.environ
    host, pg_port, s3_url, bucket = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

    def get(url, auth=None):
        req = urllib.request.Request(url)
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code

    def pg(user, password, db):
        try:
            psycopg2.connect(host=host, port=pg_port, user=user, password=password, dbname=db,
                             connect_timeout=5).close()
            return "ok"
        except psycopg2.OperationalError as err:
            return str(err).strip().splitlines()[0]

    def s3(**kw):
        c = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                         config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                       **kw.pop("config", {})), **kw)
        try:
            c.list_objects_v2(Bucket=bucket)
            return 200
        except c.exceptions.ClientError as err:
            return err.response["ResponseMetadata"]["HTTPStatusCode"]

    prefect = e["PREFECT_API_URL"] + "/admin/version"
    mlflow = e["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/experiments/search?max_results=1"
    mlflow_auth = e["MLFLOW_TRACKING_USERNAME"] + ":" + e["MLFLOW_TRACKING_PASSWORD"]
    print(json.dumps({
        "prefect": [get(prefect), get(prefect, "ganops:wrong"),
                    get(prefect, e["PREFECT_API_AUTH_STRING"])],
        "mlflow": [get(mlflow), get(mlflow, "admin:wrong"), get(mlflow, mlflow_auth)],
        "postgres": [pg("optuna", "", "optuna"), pg("optuna", "wrong", "optuna"),
                     pg("optuna", e["OPTUNA_PW"], "optuna")],
        "postgres_superuser": pg("postgres", e["SUPER_PW"], "postgres"),
        "postgres_other_db": pg("optuna", e["OPTUNA_PW"], "mlflow"),
        "s3": [s3(config={"signature_version": UNSIGNED}),
               s3(aws_access_key_id="AKIAWRONGWRONG", aws_secret_access_key="wrong"),
               s3(aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
                  aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"])],
    }))
    """
)


def probe(team: Team, netns: str | None) -> dict:
    secrets = team.secret_values()
    env = clean_env(**team.client, OPTUNA_PW=secrets["GANOPS_PG_OPTUNA_PASSWORD"],
                    SUPER_PW=secrets["GANOPS_PG_SUPERUSER_PASSWORD"])  # fmt: skip
    args = [team.bind, str(team.ports["postgres"]), team.client["AWS_ENDPOINT_URL"], "ganops-test"]
    cmd = [sys.executable, "-c", PROBE, *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return json.loads(sh(*cmd, env=env).stdout)


def assert_refused_then_accepted(seen: dict) -> None:
    # Prefect and MLflow: 401 without credentials or with wrong ones, 200 with them.
    assert seen["prefect"] == [401, 401, 200]
    assert seen["mlflow"] == [401, 401, 200]
    # PostgreSQL: a password is required and checked (scram-sha-256, no trust line).
    no_pw, wrong_pw, right = seen["postgres"]
    assert "password" in no_pw and "password authentication failed" in wrong_pw
    assert right == "ok"
    # S3: an unsigned request and unknown keys are refused, signed with the keys accepted.
    unsigned, wrong_keys, signed = seen["s3"]
    assert 400 <= unsigned < 500 and wrong_keys == 403 and signed == 200


@ROOT_ONLY
@pytest.mark.slow
def test_up_starts_every_service_and_status_shows_them(team):
    for line in ("postgres: initdb", "created roles and databases prefect, mlflow, mlflow_auth,"
                 " optuna", "created bucket ganops-test", "dvc: remote 'team'"):  # fmt: skip
        assert line in team.up_output
    rows = team.ganops("status").stdout.splitlines()
    assert sorted(r.split()[0] for r in rows) == ["mlflow", "postgres", "prefect", "s3"]
    assert all("running, answering" in r for r in rows), rows
    assert set(team.client) == CLIENT_KEYS
    assert team.client["PREFECT_API_URL"] == f"http://{team.bind}:{team.ports['prefect']}/api"
    # up again: everything is left running as it is
    again = team.ganops("up", "--services", str(team.services))
    assert again.stdout.count("already running") == 4


@ROOT_ONLY
@pytest.mark.slow
def test_each_service_refuses_requests_without_credentials(team):
    seen = probe(team, netns=None)
    assert_refused_then_accepted(seen)
    # the superuser may connect from this host only: over the bind address it is refused
    assert "no pg_hba.conf entry" in seen["postgres_superuser"]
    # a service's role reaches its own database only
    assert "no pg_hba.conf entry" in seen["postgres_other_db"]
    # and no line of pg_hba.conf trusts anyone, loopback included
    hba = (team.root.parent / "pgdata" / "pg_hba.conf").read_text().splitlines()
    rules = [line.split() for line in hba if line.strip() and not line.startswith("#")]
    assert len(rules) == 11 and all(r[-1] == "scram-sha-256" for r in rules), rules


@ROOT_ONLY
@pytest.mark.slow
def test_from_the_second_host_requests_without_credentials_are_refused(team, second_host):
    ns, _, _ = second_host
    seen = probe(team, netns=ns)
    assert_refused_then_accepted(seen)
    assert "no pg_hba.conf entry" in seen["postgres_superuser"]


@ROOT_ONLY
@pytest.mark.slow
def test_secrets_file_is_owner_only_and_nowhere_else(team):
    assert stat.S_IMODE(team.secrets.stat().st_mode) == 0o600
    assert stat.S_IMODE(team.secrets.parent.stat().st_mode) == 0o700
    values = team.secret_values()
    assert set(values) == set(SECRET_NAMES)
    assert all(len(v) >= 20 for v in values.values())
    # not in the services file, the record of the processes (command lines), the DVC config
    # that is committed, nor any service's log
    places = [team.services, team.root / ".ganops" / "services.json", team.root / ".dvc" / "config",
              *sorted((team.root / ".ganops" / "logs").glob("*.log"))]  # fmt: skip
    assert len(places) >= 7
    for path in places:
        text = path.read_text(errors="replace")
        leaked = [k for k, v in values.items() if v in text]
        assert not leaked, f"{path} holds {leaked}"
    # the credentials DVC reads sit beside the secrets, owner-only, outside the project
    local = (team.root / ".dvc" / "config.local").read_text()
    creds = Path(local.split("credentialpath = ")[1].split()[0])
    assert creds.parent == team.secrets.parent and stat.S_IMODE(creds.stat().st_mode) == 0o600


@ROOT_ONLY
@pytest.mark.slow
def test_tracked_run_artifacts_land_in_the_bucket_without_secrets(team, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from gan_models.services.s3 import client as s3_client
    from gan_models.tracking.run_ref import read_run_ref
    from gan_models.tracking.training_run import tracked_train

    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(k, team.client[k])
    params = tiny_params_yaml(tmp_path / "tiny.yaml", write_bars(tmp_path / "bars"))
    uri = team.client["MLFLOW_TRACKING_URI"]
    tracked_train(params, tmp_path / "run", tracking_uri=uri, log_system_metrics=False)
    run_id = read_run_ref(tmp_path / "run").run_id
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: no keys on clients
    s3 = s3_client(team.client["AWS_ENDPOINT_URL"], team.client["AWS_ACCESS_KEY_ID"],
                   team.client["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ganops-test", Prefix="mlflow/")
            .get("Contents", [])]  # fmt: skip
    ours = [k for k in keys if f"/{run_id}/artifacts/" in k]
    assert any(k.endswith(".png") for k in ours), keys  # the sample grids
    assert any(k.endswith("config.yaml") or k.endswith(".yaml") for k in ours), ours
    logged = " ".join([*run.data.params.values(), *run.data.tags.values(), *run.data.params,
                       *run.data.tags])  # fmt: skip
    leaked = [k for k, v in team.secret_values().items() if v in logged]
    assert not leaked
    # without credentials, the same run cannot be read
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    assert http_status(f"{uri}/api/2.0/mlflow/runs/get?run_id={run_id}") == 401
    mlflow.set_tracking_uri(None)


@ROOT_ONLY
@pytest.mark.slow
def test_optuna_study_on_the_postgres_storage(team):
    import optuna

    url = team.client["GANOPS_OPTUNA_STORAGE"]
    assert url.startswith("postgresql://optuna:") and f"@{team.bind}:" in url
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="team-check", storage=url, direction="minimize")
    study.optimize(lambda t: (t.suggest_float("x", -2, 2) - 1) ** 2, n_trials=4)
    again = optuna.load_study(study_name="team-check", storage=optuna.storages.RDBStorage(url))
    done = [t for t in again.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4 and again.best_value == min(t.value for t in done)
    with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM trials")
        assert cur.fetchone()[0] == 4


@ROOT_ONLY
@pytest.mark.slow
def test_dvc_push_here_and_pull_on_the_second_host(team, second_host, tmp_path):
    ns, _, _ = second_host
    root = team.root
    data = root / "data"
    data.mkdir()
    payload = {f"f{i}.bin": os.urandom(2048 + i) for i in range(3)}
    for name, blob in payload.items():
        (data / name).write_bytes(blob)
    dvc = [sys.executable, "-m", "dvc"]
    sh(*dvc, "add", "-q", "data", cwd=root, env=clean_env())
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "data", cwd=root)
    # the keys come from the credentials file named in .dvc/config.local (not in the clone)
    pushed = sh(*dvc, "push", cwd=root, env=clean_env())
    assert "4 files pushed" in pushed.stdout + pushed.stderr  # 3 files and the folder's listing
    clone = Path(tempfile.mkdtemp(prefix="ganops-clone-"))
    try:
        sh("git", "clone", "-q", str(root), str(clone / "c"))
        assert not (clone / "c" / ".dvc" / "config.local").exists()
        # on the second host a worker has only `ganops env`'s variables
        sh("ip", "netns", "exec", ns, *dvc, "pull", cwd=clone / "c",
           env=clean_env(**team.client))  # fmt: skip
        got = {p.name: p.read_bytes() for p in (clone / "c" / "data").iterdir()}
        assert got == payload
    finally:
        shutil.rmtree(clone, ignore_errors=True)


@ROOT_ONLY
@pytest.mark.slow
def test_up_connects_to_an_existing_postgres_and_s3_with_secrets_from_the_environment(team):
    """A second project whose services file names the running PostgreSQL and S3 endpoint
    (start: false) and whose credentials all come from the environment: it starts only its
    Prefect and MLflow servers on them, and writes none of those credentials to its file."""
    base = Path(tempfile.mkdtemp(prefix="ganops-team-b-"))
    root = base / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text("")
    ports = {k: free_port(team.bind) for k in ("prefect", "mlflow")}
    spec = {
        "mode": "team",
        "bind": team.bind,
        # the superuser may connect from this host only, so an existing server on this host is
        # named by its loopback address
        "postgres": {"start": False, "host": "127.0.0.1", "port": team.ports["postgres"]},
        "s3": {
            "start": False,
            "endpoint_url": f"http://{team.bind}:{team.ports['s3']}",
            "bucket": "ganops-b",
        },  # fmt: skip
        "prefect": {"port": ports["prefect"]},
        "mlflow": {"port": ports["mlflow"]},
    }
    services = root / "services.yaml"
    services.write_text(yaml.safe_dump(spec))
    given = team.secret_values()
    own_file = base / "secrets" / "secrets.env"
    env = clean_env(GANOPS_SECRETS_FILE=str(own_file), **given)

    def ganops(*args: str) -> subprocess.CompletedProcess:
        return sh(str(GANOPS), *args, "--root", str(root), env=env, cwd=root, check=False)

    try:
        up = ganops("up", "--services", str(services), "--timeout", "180")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "created bucket ganops-b" in up.stdout
        assert "postgres: starting" not in up.stdout and "rclone" not in up.stdout
        assert sorted(load_state(root)) == ["mlflow", "prefect"]
        prefect = f"http://{team.bind}:{ports['prefect']}/api/admin/version"
        assert http_status(prefect) == 401
        assert http_status(prefect, ("ganops", given["GANOPS_PREFECT_PASSWORD"])) == 200
        mlflow = f"http://{team.bind}:{ports['mlflow']}/api/2.0/mlflow/experiments/search"
        assert http_status(mlflow + "?max_results=1") == 401
        admin = ("admin", given["GANOPS_MLFLOW_ADMIN_PASSWORD"])
        assert http_status(mlflow + "?max_results=1", admin) == 200
        # the environment's values won: none of them was written to this project's file
        written = own_file.read_text()
        assert not [k for k, v in given.items() if v in written]
        down = ganops("down")
        assert "prefect: stopped" in down.stdout and "mlflow: stopped" in down.stdout
        assert "postgres" not in down.stdout  # not started here, so not stopped here
        rows = team.ganops("status").stdout.splitlines()
        assert all("running, answering" in r for r in rows) and len(rows) == 4
    finally:
        ganops("down")
        shutil.rmtree(base, ignore_errors=True)


@ROOT_ONLY
@pytest.mark.slow
def test_down_stops_every_service(team):
    pids = {name: svc.pid for name, svc in load_state(team.root).items()}
    assert set(pids) == {"postgres", "s3", "prefect", "mlflow"}
    out = team.ganops("down").stdout
    for name, pid in pids.items():
        assert f"{name}: stopped (pid {pid})" in out
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "no services recorded" in team.ganops("status").stdout
    assert http_status(f"http://{team.bind}:{team.ports['mlflow']}/health") == 0


# ----------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    "text, key",
    [
        ("mode: team\npostgres:\n  port: 5432\n  password: x\n", "postgres.password: unknown key"),
        ("mode: team\nprefect:\n  port: lots\n", "prefect.port: Input should be a valid integer"),
        ("mode: local\nbind: 10.213.9.1\n", "bind: 10.213.9.1 is reachable from other hosts"),
        ("mode: team\nbind: gpu-box\n", "bind: expected an IP address"),
        ("mode: team\ns3:\n  start: false\n", "s3.endpoint_url: expected the URL"),
    ],
)
def test_bad_services_file_is_one_error_line_naming_the_key(tmp_path, text, key):
    path = tmp_path / "services.yaml"
    path.write_text(text)
    (tmp_path / "pyproject.toml").write_text("")
    env = clean_env(GANOPS_SECRETS_FILE=str(tmp_path / "secrets.env"))
    out = sh(str(GANOPS), "up", "--services", str(path), "--root", str(tmp_path), check=False,
             env=env)  # fmt: skip
    assert out.returncode == 2
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {key}"), lines
    assert not (tmp_path / "secrets.env").exists()  # nothing was started or written


def test_env_needs_a_team_services_file(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text("mode: local\n")
    (tmp_path / "pyproject.toml").write_text("")
    out = sh(str(GANOPS), "env", "--services", str(path), "--root", str(tmp_path), check=False,
             env=clean_env())  # fmt: skip
    assert out.returncode == 2 and "mode: expected team" in out.stderr


def test_existing_s3_endpoint_needs_the_teams_keys(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text("mode: team\ns3:\n  start: false\n  endpoint_url: http://127.0.0.1:9\n")
    (tmp_path / "pyproject.toml").write_text("")
    secrets = tmp_path / "home" / "secrets.env"
    out = sh(str(GANOPS), "up", "--services", str(path), "--root", str(tmp_path), check=False,
             env=clean_env(GANOPS_SECRETS_FILE=str(secrets)))  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: {secrets}: missing AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; set them in the "
        "environment or in this file"
    )
    assert not secrets.exists()  # keys for someone else's endpoint are never made up


def test_secrets_file_created_owner_only_and_refused_when_others_can_read_it(tmp_path, monkeypatch):
    from gan_models.errors import GanopsError
    from gan_models.services.secrets import load_secrets

    path = tmp_path / "cfg" / "ganops" / "secrets.env"
    monkeypatch.setenv("GANOPS_SECRETS_FILE", str(path))
    for name in SECRET_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "FROM-THE-ENVIRONMENT-1")
    first = load_secrets(create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert first["AWS_ACCESS_KEY_ID"] == "FROM-THE-ENVIRONMENT-1"
    assert "FROM-THE-ENVIRONMENT-1" not in path.read_text()  # the environment's stays there
    again = load_secrets(create=True)
    assert again.values == first.values  # generated once, then read back
    path.chmod(0o644)
    with pytest.raises(GanopsError, match="readable by others"):
        load_secrets()

"""Start-up times of the team services, beside the local (sqlite) servers as the reference.

Each repeat starts, in a fresh temporary project with its own secrets file and free ports on
127.0.0.1, and times until each answers:

- ``postgres_initdb``: ``initdb`` of a new cluster (scram-sha-256, superuser password);
- ``postgres_start``: the server, until the superuser can connect;
- ``postgres_roles``: the four service roles and databases;
- ``rclone_s3``: ``rclone serve s3``, until a signed ListBuckets succeeds;
- ``prefect_pg``: the Prefect server on PostgreSQL with its auth string (first start: it
  creates its schema), until an authenticated ``/api/admin/version`` answers 200;
- ``mlflow_pg_auth``: the MLflow server on PostgreSQL, S3 artifacts, basic-auth app, until an
  authenticated experiments search answers 200;
- then, as the reference, the local servers of plain ``ganops up``: ``prefect_sqlite`` and
  ``mlflow_sqlite``;

each phase alone (the other's servers stopped), their order alternating between repeats;
then ``up_team``: ``team_up`` end to end on another new project (what ``ganops up --team``
waits for: initdb, roles, rclone, bucket, then Prefect and MLflow side by side), alone too; and
reports the median of each step and the ratios team/local for Prefect and MLflow. Needs
root (PostgreSQL runs as the postgres user). Run from the repository root::

    PYTHONPATH=. .venv/bin/python scripts/bench_team_startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

STEPS = ("postgres_initdb", "postgres_start", "postgres_roles", "rclone_s3", "prefect_pg",
         "mlflow_pg_auth", "prefect_sqlite", "mlflow_sqlite", "up_team")  # fmt: skip


def one_run(local_first: bool) -> dict[str, float]:
    """One repeat: the team stack as ``up --team`` starts it, and the local servers, each
    phase alone on the machine (the other's servers stopped), in the order given."""
    from gan_models.services import postgres as pg
    from gan_models.services import processes, team
    from gan_models.services import s3 as s3mod
    from gan_models.services import secrets as S
    from gan_models.services.team_config import ServicesConfig
    from gan_models.tracking.server import free_port, stop_process

    base = Path(tempfile.mkdtemp(prefix="ganops-bench-team-"))
    os.chmod(base, 0o755)  # the postgres user reaches its data directory through it
    os.environ[S.ENV_FILE] = str(base / "secrets" / "secrets.env")
    root = base / "proj"
    root.mkdir()
    ports = {k: free_port() for k in ("postgres", "s3", "prefect", "mlflow", "p2", "m2")}
    cfg = ServicesConfig.model_validate(
        {
            "mode": "team",
            "postgres": {"data_dir": str(base / "pg"), "port": ports["postgres"]},
            "s3": {"directory": str(base / "s3"), "port": ports["s3"]},
            "prefect": {"port": ports["prefect"]},
            "mlflow": {"port": ports["mlflow"]},
        }
    )
    required, generate = team.required_secrets(cfg)
    sec = S.load_secrets(create=True, required=required, generate=generate)
    su, su_pw = cfg.postgres.superuser, sec[S.PG_SUPERUSER]
    pids: list[tuple[str, int]] = []
    times: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t
        if hasattr(out, "pid"):
            pids.append((name, out.pid))
        return out

    def stop_all():
        for name, pid in reversed(pids):  # PostgreSQL last, once nothing uses it
            if name == "postgres_start":
                pg.stop_server(pid)
            else:
                stop_process(pid)
        pids.clear()

    def team_phase():
        data_dir = base / "pg"
        timed("postgres_initdb", lambda: pg.init_cluster(data_dir, su, su_pw))
        timed(
            "postgres_start",
            lambda: pg.start_server(root, data_dir, "127.0.0.1", ports["postgres"], su, su_pw, 120),
        )
        passwords = {n: sec[v] for n, v in S.PG_PASSWORDS.items()}
        timed(
            "postgres_roles",
            lambda: pg.ensure_roles("127.0.0.1", ports["postgres"], su, su_pw, passwords),
        )
        timed(
            "rclone_s3",
            lambda: s3mod.start_rclone(root, base / "s3", "127.0.0.1", ports["s3"],
                                       sec[S.S3_KEY_ID], sec[S.S3_SECRET], 60),
        )  # fmt: skip
        s3mod.ensure_bucket(cfg.s3_endpoint, sec[S.S3_KEY_ID], sec[S.S3_SECRET], "ganops", "x")
        timed("prefect_pg", lambda: team.start_prefect(root, cfg, sec, 240))
        timed("mlflow_pg_auth", lambda: team.start_mlflow(root, cfg, sec, 240))
        stop_all()

    def up_phase():
        # what a user waits for: team_up end to end on a new project (initdb included), with
        # Prefect and MLflow started side by side
        up_root = base / "up"
        up_root.mkdir()
        fresh = {"port": free_port()}
        up_cfg = cfg.model_copy(
            update={
                "postgres": cfg.postgres.model_copy(
                    update={"data_dir": str(base / "pg-up"), **fresh}
                ),
                "s3": cfg.s3.model_copy(update={"directory": str(base / "s3-up"),
                                                "port": free_port()}),
                "prefect": cfg.prefect.model_copy(update={"port": free_port()}),
                "mlflow": cfg.mlflow.model_copy(update={"port": free_port()}),
            }
        )  # fmt: skip
        t = time.perf_counter()
        try:
            team.team_up(up_root, up_cfg, timeout=240, echo=lambda _: None)
            times["up_team"] = time.perf_counter() - t
        finally:
            from gan_models.services import down

            down(up_root, echo=lambda _: None)

    def local_phase():
        # as plain `ganops up` starts them: Prefect, then MLflow beside it
        timed("prefect_sqlite",
              lambda: processes.start_prefect(root, "127.0.0.1", ports["p2"], 240))  # fmt: skip
        timed("mlflow_sqlite",
              lambda: processes.start_mlflow(root, "127.0.0.1", ports["m2"], 240))  # fmt: skip
        stop_all()

    try:
        phases = (local_phase, team_phase) if local_first else (team_phase, local_phase)
        for phase in (*phases, up_phase):
            phase()
    finally:
        stop_all()
        shutil.rmtree(base, ignore_errors=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write every repeat's times here")
    args = ap.parse_args()
    os.environ.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                       "MLFLOW_DISABLE_TELEMETRY": "true"})  # fmt: skip
    runs = []
    for i in range(args.repeats):
        runs.append(one_run(local_first=i % 2 == 0))
        print(
            f"repeat {i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in runs[-1].items()),
            flush=True,
        )
    med = {k: statistics.median(r[k] for r in runs) for k in STEPS}
    print("\nmedian of", args.repeats, "repeats (s):")
    for k in STEPS:
        print(f"  {k:16s} {med[k]:6.2f}")
    print(
        f"  prefect: PostgreSQL + auth / sqlite = {med['prefect_pg'] / med['prefect_sqlite']:.2f}"
    )
    print(f"  mlflow: PostgreSQL + S3 + auth / sqlite = "
          f"{med['mlflow_pg_auth'] / med['mlflow_sqlite']:.2f}")  # fmt: skip
    total = sum(med[k] for k in STEPS[:6])
    print(f"  team stack, the six steps one after another: {total:.1f} s")
    print(f"  team_up end to end (Prefect and MLflow side by side): {med['up_team']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": med}, indent=2) + "\n")


if __name__ == "__main__":
    main()

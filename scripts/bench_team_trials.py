"""Trial throughput of a team deployment with 1 and 2 worker hosts (trials per minute).

Starts the team services (`ganops up --services FILE`: PostgreSQL, rclone S3, Prefect and
MLflow with auth, the `gpu` pool and prefect.yaml's deployments) bound to a veth address, a
second host in a network namespace (own hostname, own clone of the project, data by `ganops
worker --pull`), and times the same small study (tiny DCGAN on 8x8 bars, trials as flow runs of
the pool, 2 at a time) with the worker of this host alone, then with both, alternating.
Both "hosts" share this machine's CPU cores: the 2-host figure measures orchestration (two
flow runs starting and training side by side), not extra compute. Needs root.

    PYTHONPATH=. .venv/bin/python scripts/bench_team_trials.py --trials 4 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the team fixtures the tests start the services with

from test_team_hosts import Hosts, publish, team_hosts, write_tune  # noqa: E402


def run_study(h: Hosts, name: str, trials: int) -> float:
    tune = write_tune(h.team.root, name, trials=trials, workers=2)
    publish(h.team.root, h.clone, tune)
    began = time.perf_counter()
    proc = h.tune(tune)
    out, _ = proc.communicate(timeout=1800)
    seconds = time.perf_counter() - began
    if proc.returncode:
        raise SystemExit(f"study {name} failed:\n{out[-3000:]}")
    done = [t for t in h.study(name).get_trials() if t.state.name == "COMPLETE"]
    if len(done) != trials:
        raise SystemExit(f"study {name}: {len(done)} of {trials} trials complete")
    hosts = sorted({t.user_attrs["host"].split(":")[0] for t in done})
    print(f"  {name}: {trials} trials in {seconds:.1f} s on {', '.join(hosts)}", flush=True)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    with team_hosts() as h:
        h.start_worker("here")
        for r in range(args.rounds):
            # alternate which setting goes first, so a drift in load hits both
            for n in (1, 2) if r % 2 == 0 else (2, 1):
                if n == 2 and "there" not in h.procs:
                    h.start_worker("there")
                if n == 1 and "there" in h.procs:
                    h.stop_worker("there")
                times[n].append(run_study(h, f"bench{n}-r{r}", args.trials))
    rate = {n: 60 * args.trials / statistics.median(t) for n, t in times.items()}
    print(f"\n{args.trials} trials per study, {args.rounds} round(s), median wall time:")
    for n in (1, 2):
        runs = ", ".join(f"{t:.1f}" for t in times[n])
        print(f"  {n} host(s): {statistics.median(times[n]):.1f} s ({runs}) = "
              f"{rate[n]:.2f} trials/min")  # fmt: skip
    print(f"  2 hosts / 1 host: {rate[2] / rate[1]:.2f}x")


if __name__ == "__main__":
    main()

"""Steps/s of the demo preset with the MLflow server stopped 3 s into training.

    python scripts/bench_tracking_outage.py [STEPS] [WINDOW_S]

Starts an MLflow server (temporary sqlite store, free port), trains params/dcgan-mnist5k-small.yaml
for STEPS steps (default 300) tracked to it, stops the server 3 s after the first step and prints
steps/s before and after the stop. WINDOW_S (default 0: none) ends the measurement that many
seconds after the stop, for code that would otherwise take minutes.
"""

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from gan_models.tracking.server import free_port, start_mlflow_server, stop_process  # noqa: E402
from gan_models.tracking.training_run import tracked_train  # noqa: E402

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
window = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
root = Path(tempfile.mkdtemp(prefix="bench-outage-"))
port = free_port()
proc = start_mlflow_server(
    port=port, backend_uri=f"sqlite:///{root / 'm.db'}", artifacts_dir=root / "a",
    log_file=root / "server.log",
)  # fmt: skip
times: list[tuple[int, float]] = []
marks: dict[str, float] = {}


def report(end: float) -> None:
    stop = marks["stopped"]
    before = [(s, t) for s, t in times if t <= stop]
    after = [(s, t) for s, t in times if t > stop]
    rate_before = (before[-1][0] - before[0][0]) / (before[-1][1] - before[0][1])
    done_after = (after[-1][0] if after else before[-1][0]) - before[-1][0]
    print(
        f"before the stop: {rate_before:.2f} steps/s (steps {before[0][0]}-{before[-1][0]}); "
        f"after: {done_after} steps in {end - stop:.1f} s = {done_after / (end - stop):.2f} "
        f"steps/s; last step {times[-1][0]} of {steps}",
        flush=True,
    )


def stop_later() -> None:
    time.sleep(3.0)
    stop_process(proc.pid)
    marks["stopped"] = time.perf_counter()
    if window:
        time.sleep(window)
        report(time.perf_counter())
        os._exit(0)


def record(info) -> None:
    if not times:
        threading.Thread(target=stop_later, daemon=True).start()
    times.append((info.step, time.perf_counter()))


try:
    tracked_train(
        "params/dcgan-mnist5k-small.yaml", root / "run", callbacks=[record],
        tracking_uri=f"http://127.0.0.1:{port}", overrides=[f"train.steps={steps}"],
    )  # fmt: skip
    returned = time.perf_counter()
    report(times[-1][1])
    print(f"tracked_train returned {returned - times[-1][1]:.1f} s after the last step")
finally:
    stop_process(proc.pid)

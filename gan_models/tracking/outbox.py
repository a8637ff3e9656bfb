"""The outbox: a tracked run's metrics and artifacts, sent to MLflow by a background thread.

Training must never wait on tracking. The trainer's callback only puts entries in the outbox;
one thread sends them, in order, metric values in batches of up to 1,000 (``log_batch``), with
MLflow's HTTP retries cut to none and its timeout to a few seconds for that thread alone
(:mod:`gan_models.tracking.http_settings`). While the server does not answer the entries wait
and are retried with a growing pause (0.5 s doubling to 15 s); when it answers again they are
sent, oldest first. Memory is bounded: past ``max_values`` queued metric values, new entries are
appended to RUN_DIR/mlflow_pending.spill.jsonl instead, and the user is told once.

:meth:`Outbox.close` waits a bounded time for the queue to empty. What is still unsent is
written to RUN_DIR/mlflow_pending.jsonl (artifact files that do not live in the run folder are
copied under RUN_DIR/mlflow_pending/), one line tells the user how many metric values and which
artifacts were not logged, and :func:`sync_pending` (``ganops mlflow-sync RUN_DIR``) sends them
later. Metric values keep the timestamp they were queued with, so sending one twice does not
add a second point to a SQL store's history.

Entries are JSON objects::

    {"kind": "metrics", "metrics": [[key, value, timestamp_ms, step], ...]}
    {"kind": "artifact", "file": PATH, "path": ARTIFACT_DIR or null}
    {"kind": "image", "file": PATH, "key": KEY, "step": STEP, "timestamp": ms}  (image series)
    {"kind": "tag", "key": KEY, "value": VALUE}
    {"kind": "end", "status": "FINISHED" | "FAILED" | "KILLED", "end_time": ms}

A relative ``file`` is relative to the run folder.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gan_models.errors import GanopsError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

PENDING_FILE = "mlflow_pending.jsonl"
PENDING_DIR = "mlflow_pending"  # copies of pending artifacts that do not live in the run folder
SPILL_FILE = "mlflow_pending.spill.jsonl"
SYNC_COMMAND = "ganops mlflow-sync"
MAX_BATCH = 1000  # MLflow's limit on metric values per log_batch
FLUSH_ENV = "GANOPS_MLFLOW_FLUSH_TIMEOUT"  # seconds close() waits for the queue (default 30)
TIMEOUT_ENV = "GANOPS_MLFLOW_TIMEOUT"  # seconds one request of the sender may take (default 5)


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise GanopsError(f"{name}={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise GanopsError(f"{name}={raw!r}: expected a number of seconds >= 0")
    return value


def flush_timeout() -> float:
    """Seconds a finished run waits for its queued MLflow entries ($GANOPS_MLFLOW_FLUSH_TIMEOUT)."""
    return _env_seconds(FLUSH_ENV, 30.0)


def request_timeout() -> float:
    """Seconds one request of the sender may take ($GANOPS_MLFLOW_TIMEOUT)."""
    return _env_seconds(TIMEOUT_ENV, 5.0)


def _size(entry: dict[str, Any]) -> int:
    return len(entry["metrics"]) if entry["kind"] == "metrics" else 1


def send_entries(client: MlflowClient, run_id: str, run_dir: Path, entries: list[dict]) -> None:
    """Send entries to the run, in order (consecutive metric entries as one batch)."""
    from mlflow.entities import Metric

    if entries[0]["kind"] == "metrics":
        values = [
            Metric(k, float(v), int(t), int(s)) for e in entries for k, v, t, s in e["metrics"]
        ]
        client.log_batch(run_id, metrics=values)
        return
    for e in entries:
        kind = e["kind"]
        if kind == "artifact":
            client.log_artifact(run_id, str(run_dir / e["file"]), e.get("path"))
        elif kind == "image":
            _log_image(client, run_id, run_dir / e["file"], e["key"], e["step"], e["timestamp"])
        elif kind == "tag":
            client.set_tag(run_id, e["key"], e["value"])
        elif kind == "end":
            client.set_terminated(run_id, e["status"], e.get("end_time"))
        else:
            raise GanopsError(f"unknown MLflow outbox entry {kind!r}")


def _log_image(
    client: MlflowClient, run_id: str, file: Path, key: str, step: int, timestamp: int
) -> None:
    """``MlflowClient.log_image(key=..., step=...)``'s layout (the image and its compressed copy
    under ``images/``, the run's logged-images tag), with names fixed by run, key and step rather
    than a random uuid: sent again after a partial delivery, the image replaces itself instead of
    appearing twice in the series."""
    from mlflow.tracking.multimedia import compress_image_size
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_IMAGES
    from PIL import Image

    uid = uuid.uuid5(uuid.NAMESPACE_URL, f"ganops/{run_id}/{key}/{step}")
    stem = f"{key.replace('/', '~')}+step+{step}+timestamp+{timestamp}+{uid}"
    with tempfile.TemporaryDirectory(prefix="ganops-image-") as tmp, Image.open(file) as img:
        img.load()
        img.save(Path(tmp) / f"{stem}.png")
        compress_image_size(img).save(Path(tmp) / f"{stem}+compressed.webp")
        for name in (f"{stem}.png", f"{stem}+compressed.webp"):
            client.log_artifact(run_id, str(Path(tmp) / name), "images")
    client.set_tag(run_id, MLFLOW_LOGGED_IMAGES, True)


def _take(queue: Iterable[dict]) -> list[dict]:
    """The entries to send next: a run of metric entries up to MAX_BATCH values, or one entry."""
    out: list[dict] = []
    n = 0
    for e in queue:
        if e["kind"] != "metrics":
            return out or [e]
        if out and n + _size(e) > MAX_BATCH:
            break
        out.append(e)
        n += _size(e)
    return out


def _chunks(entry: dict) -> Iterator[dict]:
    """A metrics entry in pieces of at most MAX_BATCH values (any other entry as it is)."""
    if entry["kind"] != "metrics" or len(entry["metrics"]) <= MAX_BATCH:
        yield entry
        return
    for i in range(0, len(entry["metrics"]), MAX_BATCH):
        yield {"kind": "metrics", "metrics": entry["metrics"][i : i + MAX_BATCH]}


def describe(entries: list[dict]) -> str:
    """What the entries hold, in words: metric values (with their steps), artifacts, the rest."""
    values = [m for e in entries if e["kind"] == "metrics" for m in e["metrics"]]
    parts = []
    if values:
        steps = [s for _, _, _, s in values]
        keys = sorted({k for k, _, _, _ in values})
        parts.append(
            f"{len(values):,} metric values ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''};"
            f" steps {min(steps)}-{max(steps)})"
        )
    images = [e for e in entries if e["kind"] == "image"]
    if images:
        parts.append(
            f"{len(images)} sample grids (steps {', '.join(str(e['step']) for e in images[:8])}"
            f"{', ...' if len(images) > 8 else ''})"
        )
    files = [
        f"{e['path'] + '/' if e.get('path') else ''}{Path(e['file']).name}"
        for e in entries
        if e["kind"] == "artifact"
    ]
    if files:
        parts.append(f"{len(files)} artifacts ({', '.join(files)})")
    tags = [e["key"] for e in entries if e["kind"] == "tag"]
    if tags:
        parts.append(f"tags {', '.join(tags)}")
    if any(e["kind"] == "end" for e in entries):
        parts.append("the run's end status")
    return "; ".join(parts) or "nothing"


def read_pending(run_dir: str | Path) -> list[dict]:
    """The entries of RUN_DIR/mlflow_pending.jsonl (and of an unmerged spill file), in order."""
    run_dir = Path(run_dir)
    out: list[dict] = []
    for name in (PENDING_FILE, SPILL_FILE):
        path = run_dir / name
        if path.is_file():
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise GanopsError(f"{path}:{i}: not a JSON entry ({e})") from None
    return out


def _write_pending(run_dir: Path, entries: list[dict]) -> None:
    path = run_dir / PENDING_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
    tmp.replace(path)
    (run_dir / SPILL_FILE).unlink(missing_ok=True)


def _clear_pending(run_dir: Path) -> None:
    (run_dir / PENDING_FILE).unlink(missing_ok=True)
    (run_dir / SPILL_FILE).unlink(missing_ok=True)
    shutil.rmtree(run_dir / PENDING_DIR, ignore_errors=True)


class Outbox:
    """Queued MLflow logging for one run; see the module's docstring.

    ``put_*`` never waits on the network. Entries left in RUN_DIR/mlflow_pending.jsonl by an
    earlier session of the same run are queued first.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        run_dir: str | Path,
        *,
        tracking_uri: str = "",
        timeout: float | None = None,
        max_values: int = 200_000,
    ) -> None:
        self.client, self.run_id, self.run_dir = client, run_id, Path(run_dir)
        self.uri = tracking_uri
        self.timeout = request_timeout() if timeout is None else timeout
        self.max_values = max_values
        self._queue: collections.deque[dict] = collections.deque()
        self._queued_values = 0
        self._spilling = False
        self._cond = threading.Condition()
        self._closing = self._stop = False
        self._in_flight: list[dict] = []
        self._staging = Path(tempfile.mkdtemp(prefix="ganops-outbox-"))
        self.sent = 0  # metric values delivered
        self.last_error: str | None = None
        self._outage_reported = False
        leftovers = [e for e in read_pending(self.run_dir) if e["kind"] != "end"]
        if leftovers:  # an earlier session's go first; this session ends the run itself
            _write_pending(self.run_dir, leftovers)  # merges a spill file into the list
            for e in leftovers:
                self._append(e)
        self._thread = threading.Thread(target=self._run, name="ganops-mlflow-outbox", daemon=True)
        self._thread.start()

    # -- the training side: never blocks on the network -------------------------------------

    def _append(self, entry: dict) -> None:
        with self._cond:
            if self._spilling or self._queued_values + _size(entry) > self.max_values:
                if not self._spilling:
                    self._spilling = True
                    _say(
                        f"MLflow at {self.uri or 'the tracking store'} is behind: "
                        f"{self._queued_values:,} metric values are queued (the limit); later "
                        f"entries go to {self.run_dir / SPILL_FILE} for `{SYNC_COMMAND} "
                        f"{self.run_dir}`"
                    )
                with open(self.run_dir / SPILL_FILE, "a") as f:
                    for piece in _chunks(entry):
                        f.write(json.dumps(piece) + "\n")
                return
            for piece in _chunks(entry):
                self._queue.append(piece)
                self._queued_values += _size(piece)
            self._cond.notify()

    def put_metrics(
        self, values: dict[str, float], step: int, timestamp_ms: int | None = None
    ) -> None:
        if not values:
            return
        now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        self._append(
            {
                "kind": "metrics",
                "metrics": [[k, float(v), now, int(step)] for k, v in values.items()],
            }
        )

    def put_artifact(self, file: str | Path, artifact_path: str | None = None) -> None:
        """Log a file. One outside the run folder is copied now (its content at this moment)."""
        self._append({"kind": "artifact", "file": self._keep(Path(file)), "path": artifact_path})

    def put_image(self, file: str | Path, key: str, step: int) -> None:
        now = int(time.time() * 1000)
        entry = {"kind": "image", "file": self._keep(Path(file)), "key": key, "step": step}
        self._append({**entry, "timestamp": now})

    def put_tag(self, key: str, value: str) -> None:
        self._append({"kind": "tag", "key": key, "value": value})

    def staging_dir(self) -> Path:
        """A folder for files made only to be logged (figures); the outbox removes it."""
        return self._staging

    def _keep(self, file: Path) -> str:
        file = file.resolve()
        try:
            return str(file.relative_to(self.run_dir.resolve()))
        except ValueError:
            pass
        if not file.is_relative_to(self._staging):
            dest = Path(tempfile.mkdtemp(dir=self._staging)) / file.name
            shutil.copy2(file, dest)
            file = dest
        return str(file)

    # -- the sender thread -----------------------------------------------------------------

    def _run(self) -> None:
        from gan_models.tracking.http_settings import short_http

        short_http(max_retries=0, timeout=self.timeout)
        pause = 0.5
        while True:
            with self._cond:
                while not self._queue and not self._closing and not self._stop:
                    self._cond.wait()
                if self._stop or not self._queue:
                    return
                batch = _take(self._queue)
                self._in_flight = batch
            try:
                send_entries(self.client, self.run_id, self.run_dir, batch)
            except Exception as e:  # the server's down, or refused: keep them, try again later
                with self._cond:
                    self._in_flight = []
                    self.last_error = _brief(e)
                    if not self._outage_reported:
                        self._outage_reported = True
                        _say(
                            f"MLflow at {self.uri or 'the tracking store'} does not take the "
                            f"run's entries ({self.last_error}); training goes on, they are "
                            "kept and retried"
                        )
                    self._cond.wait(pause)
                pause = min(pause * 2, 15.0)
                continue
            with self._cond:
                for _ in batch:
                    done = self._queue.popleft()
                    self._queued_values -= _size(done)
                    if done["kind"] == "metrics":
                        self.sent += len(done["metrics"])
                self._in_flight = []
                self._cond.notify_all()
            if self._outage_reported:
                self._outage_reported = False
                _say(f"MLflow at {self.uri or 'the tracking store'} answers again; sending")
            pause = 0.5

    # -- the end -----------------------------------------------------------------------------

    def close(self, wait: float | None = None, end: dict | None = None) -> list[dict]:
        """Wait up to ``wait`` s (default :func:`flush_timeout`) for the queue to empty.

        Returns the entries that were not sent (``[]`` when everything arrived). Those, followed
        by ``end`` (the run's end status, for the sync to set), are written to
        RUN_DIR/mlflow_pending.jsonl and the user is told what they are and how to send them.
        """
        wait = flush_timeout() if wait is None else wait
        deadline = time.monotonic() + wait
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while self._queue and time.monotonic() < deadline:
                self._cond.wait(min(0.2, max(deadline - time.monotonic(), 0.0)))
            self._stop = True
            self._cond.notify_all()
        # A request in flight ends within the sender's timeout; then the queue is what it is.
        self._thread.join(self.timeout + 1.0)
        with self._cond:
            left = list(self._queue)
        spilled = []
        if self._spilling and (self.run_dir / SPILL_FILE).is_file():
            spilled = [
                json.loads(x)
                for x in (self.run_dir / SPILL_FILE).read_text().splitlines()
                if x.strip()
            ]
        pending = left + spilled
        if not pending:
            _clear_pending(self.run_dir)
            shutil.rmtree(self._staging, ignore_errors=True)
            return []
        pending = [self._settle(e) for e in pending]
        _write_pending(self.run_dir, pending + ([end] if end else []))
        shutil.rmtree(self._staging, ignore_errors=True)
        why = f" ({self.last_error})" if self.last_error else ""
        _say(
            f"MLflow at {self.uri or 'the tracking store'} did not take {describe(pending)} "
            f"of run {self.run_id} within {wait:g} s{why}; they are kept in "
            f"{self.run_dir / PENDING_FILE}: send them with `{SYNC_COMMAND} {self.run_dir}`"
        )
        return pending

    def _settle(self, entry: dict) -> dict:
        """A pending entry whose file is in the staging folder, with the file moved into
        RUN_DIR/mlflow_pending/ (numbered folders keep equal names apart)."""
        if entry["kind"] not in ("artifact", "image") or not Path(entry["file"]).is_absolute():
            return entry
        src = Path(entry["file"])
        if not src.is_relative_to(self._staging):
            return entry
        base = self.run_dir / PENDING_DIR
        n = 0
        while (base / str(n)).exists():
            n += 1
        dest = base / str(n) / src.name
        dest.parent.mkdir(parents=True)
        shutil.move(str(src), dest)
        return {**entry, "file": str(dest.relative_to(self.run_dir))}


def _brief(e: Exception) -> str:
    """An exception in one short line: its type, the start and the end of its first line."""
    text = (str(e).splitlines() or [""])[0]
    if len(text) > 160:
        text = f"{text[:70]} ... {text[-80:]}"
    return f"{type(e).__name__}: {text}"


def _say(message: str) -> None:
    print(f"ganops: {message}", file=sys.stderr, flush=True)


def sync_pending(run_dir: str | Path, tracking_uri: str | None = None) -> tuple[int, str]:
    """Send what a tracked run could not log (RUN_DIR/mlflow_pending.jsonl) to its MLflow run.

    Sends in order and removes each entry once it is in; on a failure the rest stays pending
    and the error says what is left. Returns (entries sent, their description).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from gan_models.tracking.run_ref import RUN_REF_FILE, read_run_ref
    from gan_models.tracking.store import check_reachable, resolve_tracking_uri

    run_dir = Path(run_dir)
    ref = read_run_ref(run_dir)
    if ref is None:
        raise GanopsError(f"{run_dir}: no {RUN_REF_FILE}; the folder is not a tracked run")
    entries = read_pending(run_dir)
    if not entries:
        return 0, "nothing"
    uri = resolve_tracking_uri(tracking_uri, run_dir)
    check_reachable(uri)
    client = MlflowClient(uri)
    try:
        client.get_run(ref.run_id)
    except MlflowException:
        raise GanopsError(f"run {ref.run_id} does not exist at {uri}") from None
    rest = list(entries)
    while rest:
        batch = _take(rest)
        try:
            send_entries(client, ref.run_id, run_dir, batch)
        except Exception as e:
            _write_pending(run_dir, rest)
            raise GanopsError(
                f"MLflow at {uri} refused entries of run {ref.run_id} "
                f"({_brief(e)}); still pending: "
                f"{describe(rest)} in {run_dir / PENDING_FILE}"
            ) from None
        rest = rest[len(batch) :]
    _clear_pending(run_dir)
    return len(entries), describe(entries)

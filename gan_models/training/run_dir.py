"""The run folder's housekeeping: whether a run can be resumed, what the trainer wrote (so a
restart clears exactly that), stats.jsonl truncation on resume and its CSV views (curves/)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gan_models.errors import ConfigError
from gan_models.training.params import TrainParams, load_run_config
from gan_models.utils.dicts import flatten
from gan_models.utils.io import write_text_atomic

# Keys that may differ between a run and its resumption: they change bookkeeping, not results.
RESUMABLE_CHANGES = {
    "train.steps",
    "data.cache_mb",
    "data.prefetch",
    "train.progress",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.log_every",
    "train.sample_every",
    "train.fid_every",
    "train.fid_samples",
    "train.fid_features",
}


def check_resume_config(saved: TrainParams, new: TrainParams, run_dir: Path) -> None:
    a, b = flatten(saved.to_dict()), flatten(new.to_dict())
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    changed = [k for k in changed if k not in RESUMABLE_CHANGES and k != "name"]
    if changed:
        raise ConfigError(
            f"--resume: {run_dir} was trained with other params; these keys differ: "
            + ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in changed)
        )


TRAINER_FILES = (
    "checkpoints",
    "samples",
    "stats.jsonl",
    "run.json",
    "generator.safetensors",
    "curves",
)


def restart_reason(run_dir: Path, params: TrainParams) -> str | None:
    """Why an ``"auto"`` resume must start over, or None when the run can be continued."""
    if (run_dir / "run.json").exists():
        return "the run there is finished"
    if not (run_dir / "config.yaml").exists():
        return "no config.yaml next to the checkpoints"
    try:
        check_resume_config(load_run_config(run_dir / "config.yaml"), params, run_dir)
    except ConfigError as e:
        return str(e)
    return None


def clear_run(run_dir: Path) -> None:
    """Remove what the trainer wrote (other files in the folder are left alone)."""
    for name in TRAINER_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def write_curves(run_dir: Path) -> None:
    """CSV views of stats.jsonl for plotting tools (DVC plots): losses per logged step, FID."""
    records = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines() if x]
    loss_rows = [r for r in records if any(k.endswith("/loss") for k in r)]
    fid_rows = [r for r in records if "fid" in r]
    keys = sorted({k for r in loss_rows for k in r if "/" in k})
    tables = {
        "losses.csv": (["step", *keys, "images_per_s"], loss_rows),
        "fid.csv": (["step", "fid"], fid_rows),
    }
    for name, (cols, rows) in tables.items():
        lines = [",".join(cols)]
        lines += [",".join("" if r.get(c) is None else repr(r[c]) for c in cols) for r in rows]
        write_text_atomic(run_dir / "curves" / name, "\n".join(lines) + "\n")


def truncate_stats(path: Path, step: int) -> None:
    """Drop records past ``step`` so a resumed run's stats read as one uninterrupted run."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    write_text_atomic(path, "".join(ln + "\n" for ln in keep))

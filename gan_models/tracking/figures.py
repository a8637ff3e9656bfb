"""Figures of a training run from its RUN_DIR/stats.jsonl: loss curves and FID during training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_stats(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of RUN_DIR/stats.jsonl, one per logged step; [] when there is none."""
    path = Path(run_dir) / "stats.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_figures(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Matplotlib figures of the loss curves and, when evaluated during training, FID."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figures: dict[str, Any] = {}
    loss_keys = sorted({k for s in stats for k in s if "/" in k})
    if loss_keys:
        fig = Figure(figsize=(7, 4), dpi=100)
        ax = fig.add_subplot()
        for k in loss_keys:
            pts = [(s["step"], s[k]) for s in stats if k in s]
            ax.plot(*zip(*pts, strict=True), label=k, marker="." if len(pts) < 20 else None)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        figures["losses.png"] = fig
    fid = [(s["step"], s["fid"]) for s in stats if "fid" in s]
    if fid:
        fig = Figure(figsize=(7, 4), dpi=100)
        ax = fig.add_subplot()
        ax.plot(*zip(*fid, strict=True), marker="o")
        ax.set_xlabel("step")
        ax.set_ylabel("FID")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        figures["fid.png"] = fig
    return figures

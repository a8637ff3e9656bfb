"""What the experiment found: intervals, the table, the plot and the conclusion as the numbers
say it.

Each arm's accuracy at each k is the mean over seeds with a 95% Student-t interval. Arms are
compared with real-only *paired by seed* (same subset, same initial weights and batch-order
generator), so the difference's interval is the t interval of the per-seed differences. An
arm "helps" where that interval lies above zero, "hurts" where it lies below, and otherwise
the data cannot tell it from real-only. The intervals cover the classifier's and the synthetic
draw's randomness for the one seeded subset per k; they do not cover the choice of subset.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

BASELINE = "real"


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 95% Student-t interval (n >= 2)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "helps"
    if hi < 0:
        return "hurts"
    return "no clear difference"


def summarise(results: dict[int, dict[str, list[float]]]) -> dict[str, Any]:
    """Per k and arm: accuracy mean/interval/seeds, and the paired difference from real-only."""
    out: dict[str, Any] = {}
    for k, arms in results.items():
        base = np.asarray(arms[BASELINE])
        row: dict[str, Any] = {}
        for arm, accs in arms.items():
            m, lo, hi = t_interval(accs)
            lo, hi = max(lo, 0.0), min(hi, 1.0)  # an accuracy's interval stays within [0, 1]
            entry: dict[str, Any] = {"accuracy": m, "low": lo, "high": hi, "seeds": list(accs)}
            if arm != BASELINE:
                d, dlo, dhi = t_interval(list(np.asarray(accs) - base))
                entry.update(diff=d, diff_low=dlo, diff_high=dhi, verdict=verdict(dlo, dhi))
            row[arm] = entry
        out[f"k{k}"] = row
    return out


def _ks(summary: dict[str, Any]) -> list[str]:
    """The summary's keys ("k10", "k50", ...) in increasing k, whatever order they were read in."""
    return sorted(summary, key=lambda k: int(k[1:]))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table_markdown(summary: dict[str, Any], arms: list[str], descriptions: dict[str, str]) -> str:
    """Accuracy (%) [95% CI] per arm and k, then the paired difference from real-only."""
    ks = _ks(summary)
    head = "| arm | what it trains on | " + " | ".join(f"k = {k[1:]}" for k in ks) + " |"
    sep = "|---|---|" + "---|" * len(ks)
    lines = ["Test accuracy (%), mean over seeds [95% CI]:", "", head, sep]
    for arm in arms:
        cells = [
            f"{_pct(e['accuracy'])} [{_pct(e['low'])}, {_pct(e['high'])}]"
            for e in (summary[k][arm] for k in ks)
        ]
        lines.append(f"| {arm} | {descriptions[arm]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Difference from real only (points), paired by seed [95% CI]:",
        "",
        "| arm | " + " | ".join(f"k = {k[1:]}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for arm in arms:
        if arm == BASELINE:
            continue
        cells = []
        for k in ks:
            e = summary[k][arm]
            cells.append(
                f"{100 * e['diff']:+.1f} [{100 * e['diff_low']:+.1f}, {100 * e['diff_high']:+.1f}]"
                f" {e['verdict']}"
            )
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def conclusion(summary: dict[str, Any], arms: list[str], n_seeds: int) -> str:
    """One line per arm: where it helps, where it hurts, where it cannot be told apart."""
    lines = [
        f"Against real only (paired by seed, 95% intervals over {n_seeds} seeds, one seeded "
        "subset per k):"
    ]
    for arm in arms:
        if arm == BASELINE:
            continue
        by: dict[str, list[str]] = {"helps": [], "hurts": [], "no clear difference": []}
        for k in _ks(summary):
            e = summary[k][arm]
            by[e["verdict"]].append(
                f"k={k[1:]} {100 * e['diff']:+.1f} points [{100 * e['diff_low']:+.1f}, "
                f"{100 * e['diff_high']:+.1f}]"
            )
        parts = [f"{v} at {', '.join(items)}" for v, items in by.items() if items]
        lines.append(f"- {arm}: " + "; ".join(parts) + ".")
    # The question users ask: does synthetic data beat the classical baseline?
    syn = [
        a for a in arms if "synthetic" in a and a.startswith("synthetic-") and a != "synthetic-only"
    ]
    if "classical" in arms and syn:
        for k in _ks(summary):
            row = summary[k]
            best = max(syn, key=lambda a: row[a]["accuracy"])
            d = row[best]["accuracy"] - row["classical"]["accuracy"]
            lines.append(
                f"- k={k[1:]}: the best synthetic arm ({best}, {_pct(row[best]['accuracy'])}%) is "
                f"{100 * d:+.1f} points from classical augmentation "
                f"({_pct(row['classical']['accuracy'])}%)."
            )
    return "\n".join(lines) + "\n"


def plot_csv(summary: dict[str, Any], arms: list[str]) -> str:
    """Wide CSV for ``dvc plots``: one row per k, one column per arm (accuracy in %)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["k", *arms])
    for k in _ks(summary):
        w.writerow([k[1:], *(f"{100 * summary[k][a]['accuracy']:.2f}" for a in arms)])
    return buf.getvalue()


def plot_figure(summary: dict[str, Any], arms: list[str], title: str):
    """Accuracy against k (log scale) per arm, with the 95% intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [int(k[1:]) for k in _ks(summary)]
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for i, arm in enumerate(arms):
        e = [summary[f"k{k}"][arm] for k in ks]
        y = np.array([x["accuracy"] for x in e]) * 100
        err = np.array([[x["accuracy"] - x["low"], x["high"] - x["accuracy"]] for x in e]).T * 100
        # spread the arms a little along x so the error bars do not hide each other
        xs = np.array(ks) * (1 + 0.03 * (i - (len(arms) - 1) / 2))
        ax.errorbar(
            xs,
            y,
            yerr=err,
            marker="o",
            capsize=3,
            label=arm,
            linestyle="--" if arm == BASELINE else "-",
        )
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("real training images per class (k)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the lines
    fig.tight_layout()
    return fig

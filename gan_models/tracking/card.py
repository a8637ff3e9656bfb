"""The model card: one markdown page logged with every generator model and registered version."""

from __future__ import annotations

from typing import Any

from gan_models.families import get_family
from gan_models.metrics.report import metric_rows, metrics_markdown
from gan_models.tracking import lineage as L
from gan_models.training.params import TrainParams


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def metrics_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, value, notes) rows of an evaluation result; absent metrics are left out.

    The rows of every registered metric, as the CLI table and the run summary show them
    (:func:`gan_models.metrics.report.metric_rows`).
    """
    return metric_rows(metrics)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def model_card(
    model_name: str,
    params: TrainParams,
    metrics: dict[str, Any] | None,
    tags: dict[str, str],
    *,
    run_id: str | None = None,
    steps: int | None = None,
    samples_file: str | None = "samples.png",
) -> str:
    """Markdown: family, params summary, metrics with CIs and floor, lineage, samples, use/limits.

    ``tags`` are the run's tags (the lineage tags of :mod:`gan_models.tracking.lineage`).
    ``samples_file`` is the sample grid's name relative to the card (logged beside it).
    """
    family = get_family(params.model.family)
    d, m, lo, t = params.data, params.model, params.loss, params.train
    dataset = tags.get(L.TAG_DATASET, d.path)
    d_lr = f", D lr {t.lr_d:g}" if t.lr_d else ""
    ema = f"decay {t.ema_decay} (the weights are the EMA's)" if t.ema_decay else "off"
    out = [f"# Model card: {model_name}", ""]
    out += [
        f"A **{family.name}** generator ({family.description}) trained on **{dataset}**.",
        f"Paper: {family.paper}.",
        "",
        "## Training",
        "",
        _table(
            ("setting", "value"),
            [
                ("data", f"`{d.path}`" + (f" split `{d.split}`" if d.split else "")),
                ("image size", f"{d.image_size} px"),
                ("latent dim / width", f"{m.latent_dim} / {m.width}"),
                ("loss", lo.type or family.default_loss),
                ("steps x batch", f"{steps or t.steps} x {t.batch_size}"),
                ("optimizer", f"{t.optimizer}, lr {t.lr:g}{d_lr}"),
                ("EMA", ema),
                ("seed", str(t.seed)),
            ],
        ),
        "",
        "## Metrics",
        "",
    ]
    table = metrics_markdown(metrics or {})
    if table:
        out.append(table)
        ex = _get(metrics, "lineage", "extractor") or {}
        lin = (metrics or {}).get("lineage") or {}
        out += [
            "",
            f"Features: {ex.get('name', 'n/a')} (sha256 {str(ex.get('sha256', 'n/a'))[:12]}, "
            f"resize {ex.get('resize', 'n/a')}); reference split {lin.get('reference_split')}, "
            f"{lin.get('n_fake')} generated samples, seed {lin.get('seed')}. Numbers compare only "
            "with numbers computed with the same features, sample count and reference.",
        ]
    else:
        out.append("Not evaluated.")
    version = tags.get(L.TAG_DATA_VERSION, "n/a")
    dirty = " (uncommitted changes)" if tags.get(L.TAG_GIT_DIRTY) == "true" else ""
    study, trial = tags.get(L.TAG_OPTUNA_STUDY, "n/a"), tags.get(L.TAG_OPTUNA_TRIAL, "n/a")
    lineage_rows = [
        ("data version", f"`{version}` ({tags.get(L.TAG_DATA_VERSION_SOURCE, 'n/a')})"),
        ("git commit", f"`{tags.get(L.TAG_GIT_COMMIT, 'n/a')}`{dirty}"),
        ("params hash", f"`{tags.get(L.TAG_PARAMS_HASH, params.digest())}`"),
        ("MLflow run", f"`{run_id}`" if run_id else "n/a"),
        ("Prefect flow run", tags.get(L.TAG_FLOW_RUN, "n/a")),
        ("Optuna study / trial", f"{study} / {trial}"),
    ]
    out += ["", "## Lineage", "", _table(("what", "value"), lineage_rows), ""]
    if samples_file:
        out += ["## Samples", "", f"![samples from the EMA generator]({samples_file})", ""]
    conditional = " Conditional: pass class labels." if family.conditional else ""
    out += [
        "## Intended use",
        "",
        f"Research and teaching: sampling synthetic {dataset} images, comparing GAN families and "
        f"training settings, testing evaluation and data pipelines.{conditional} Load it with "
        "`ganops sample models:/NAME@champion` or `mlflow.pyfunc.load_model` (input: latents "
        f"(N, {m.latent_dim}) float32"
        + (", labels (N,) int64" if family.conditional else "")
        + "; output: images (N, C, H, W) float32 in [-1, 1]).",
        "",
        "## Limits",
        "",
        f"- It knows only {dataset} at {d.image_size} px; it will not produce anything else.",
        "- FID with few samples is biased upwards; read it against the real-vs-real floor and "
        "compare models only at equal sample counts and features.",
        "- Generated images can be close copies of training images; check the memorisation "
        "distances of the evaluation before sharing samples.",
        "- Class balance and diversity are not guaranteed (mode collapse shows as low recall).",
        "- Not for decisions about people or as a substitute for real data in evaluation.",
        "",
    ]
    return "\n".join(out)

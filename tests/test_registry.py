"""The registry against a real MLflow server: register, the promotion gate, load by alias.

The gate's cases use metrics.json files written here around one champion (FID 50, CI [48, 52]):
a worse challenger, an indistinguishable one, a better one with much worse recall, a clearly
better one, and a forced one. Decisions and reasons are read back from the versions.
"""

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import typer
from mlflow.tracking import MlflowClient
from mlflow_server import shared_mlflow_server, tiny_params_yaml, write_bars

from gan_models.errors import ConfigError, GanopsError
from gan_models.sampling import RunGenerator
from gan_models.tracking.cli import register_commands
from gan_models.tracking.gate import GateMetrics, RegisterParams, gate, load_register_params
from gan_models.tracking.model import load_registered_generator
from gan_models.tracking.promotion import promote
from gan_models.tracking.registry import register_run
from gan_models.tracking.run_ref import RUN_REF_FILE, read_run_ref
from gan_models.tracking.store import using_tracking_uri
from gan_models.training import train
from gan_models.training.generate import sample_latents

EXTRACTOR = {"name": "domain", "sha256": "cd" * 32, "resize": "none"}


def metrics_json(fid, low, high, precision=0.70, recall=0.60, floor=3.0):
    """An evaluation result shaped like metrics.json, with the numbers the gate reads."""
    lineage = {"extractor": EXTRACTOR, "n_fake": 500, "reference_split": "bars/train", "seed": 0}
    return {
        "fid": {
            "value": fid,
            "ci95": {"low": low, "high": high},
            "floor": {"value": floor, "split": "bars/test", "n_real_test": 100},
            "value_at_floor_n": fid + 1,
            "lineage": {**lineage, "n_real": 1000},
        },
        "precision_recall": {"precision": precision, "recall": recall, "k": 3},
        "summary": {"fid": fid, "fid_ci_low": low, "fid_ci_high": high, "recall": recall},
        "lineage": lineage,
    }


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, pytestconfig):
    """A real MLflow server on 127.0.0.1 (sqlite + tmp artifacts), shared by the session."""
    return shared_mlflow_server(tmp_path_factory, pytestconfig)


# ----------------------------------------------------------------------------- the gate alone

CHAMP = GateMetrics(50.0, 48.0, 52.0, 0.70, 0.60)
P = RegisterParams()


@pytest.mark.parametrize(
    "candidate, promoted, words",
    [
        (GateMetrics(60.0, 58.0, 62.0, 0.70, 0.60), False, "not lower"),
        (GateMetrics(49.5, 47.0, 52.0, 0.70, 0.60), False, "intervals overlap"),
        (GateMetrics(30.0, 29.0, 31.0, 0.70, 0.60), True, "do not overlap"),
        (GateMetrics(30.0, 29.0, 31.0, 0.69, 0.59), True, "tolerance 0.02"),  # within tolerance
        (GateMetrics(30.0, 29.0, 31.0, 0.70, 0.30), False, "recall 0.3 is below"),
        (GateMetrics(30.0, 29.0, 31.0, 0.50, 0.60), False, "precision 0.5 is below"),
        (GateMetrics(47.9, 46.0, 47.99, 0.70, 0.60), True, "do not overlap"),  # just apart
    ],
)
def test_gate_cases(candidate, promoted, words):
    ok, reason = gate(candidate, CHAMP, P)
    assert ok is promoted and words in reason, reason


def test_gate_margin_first_version_and_comparability():
    assert gate(CHAMP, None, P) == (True, "first version: there is no champion to compare with")
    margin = RegisterParams(fid_margin=1.0)
    near = GateMetrics(49.5, 47.0, 52.0, 0.70, 0.60)  # CIs overlap, but the margin rule decides
    assert gate(near, CHAMP, margin)[0] is False
    assert gate(GateMetrics(48.9, 47.0, 52.0, 0.7, 0.6), CHAMP, margin)[0] is True
    other = GateMetrics(30.0, 29.0, 31.0, 0.7, 0.6, {"metrics.extractor_sha256": "x"})
    champ = GateMetrics(50.0, 48.0, 52.0, 0.7, 0.6, {"metrics.extractor_sha256": "y"})
    ok, reason = gate(other, champ, P)
    assert not ok and "not comparable" in reason and "extractor_sha256 x vs y" in reason


def test_register_params_file(tmp_path):
    p = load_register_params("params/register.yaml")
    assert p == RegisterParams(fid_margin=None, pr_tolerance=0.02)
    assert load_register_params("params/register.yaml", ["register.fid_margin=2"]).fid_margin == 2
    bad = tmp_path / "r.yaml"
    bad.write_text("register:\n  pr_tolerence: 0.1\n")
    with pytest.raises(ConfigError, match="pr_tolerence: unknown key"):
        load_register_params(bad)


# ----------------------------------------------------------------------------- with a server


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished dcgan and one cgan run on 8x8 bars, trained without tracking."""
    tmp = tmp_path_factory.mktemp("registry")
    data = write_bars(tmp / "bars")
    runs = {}
    for family in ("dcgan", "cgan"):
        runs[family] = tmp / f"run-{family}"
        train(tiny_params_yaml(tmp / f"{family}.yaml", data, family=family, steps=2), runs[family])
    return runs


def evaluated_copy(run, dest, metrics):
    """A copy of an untracked run folder with its own metrics.json (a new MLflow run each)."""
    shutil.copytree(run, dest)
    (dest / "metrics.json").write_text(json.dumps(metrics))
    return dest


def test_register_promote_and_gate_decisions(mlflow_server, trained, tmp_path):
    client = MlflowClient(mlflow_server)
    name = "gate-bars"

    def register(tag, metrics):
        run = evaluated_copy(trained["dcgan"], tmp_path / tag, metrics)
        return register_run(run, model_name=name, tracking_uri=mlflow_server)

    def decide(**kw):
        return promote(name, params=P, tracking_uri=mlflow_server, **kw)

    def recorded(version):
        tags = client.get_model_version(name, str(version)).tags
        return tags["promotion.decision"], tags["promotion.reason"], tags["promotion.compared_to"]

    def champion():
        return client.get_model_version_by_alias(name, "champion").version

    v1 = register("champ", metrics_json(50.0, 48.0, 52.0))
    assert v1.tags["fid"] == "50.0" and v1.tags["fid_ci_low"] == "48.0"
    assert v1.tags["recall"] == "0.6" and v1.tags["metrics.extractor_sha256"] == "cd" * 32
    assert v1.run_id == read_run_ref(tmp_path / "champ").run_id
    assert client.get_model_version_by_alias(name, "challenger").version == v1.version
    d = decide()
    assert d.decision == "promoted" and d.compared_to is None and champion() == v1.version
    assert recorded(v1.version)[0] == "promoted" and "first version" in recorded(v1.version)[1]

    v2 = register("worse", metrics_json(60.0, 58.0, 62.0))
    d = decide()
    assert (d.decision, d.version, d.compared_to) == ("rejected", v2.version, v1.version)
    assert champion() == v1.version
    decision, reason, against = recorded(v2.version)
    assert decision == "rejected" and "not lower" in reason and against == f"{name}/{v1.version}"

    v3 = register("same", metrics_json(49.5, 47.0, 52.0))
    assert decide().decision == "rejected" and champion() == v1.version
    assert "intervals overlap" in recorded(v3.version)[1]

    v4 = register("low-recall", metrics_json(30.0, 29.0, 31.0, recall=0.30))
    d = decide()
    assert d.decision == "rejected" and champion() == v1.version
    assert "recall 0.3 is below" in d.reason and "precision" not in d.reason
    assert recorded(v4.version)[1] == d.reason

    v5 = register("better", metrics_json(30.0, 29.0, 31.0, precision=0.71, recall=0.61))
    d = decide()
    assert d.decision == "promoted" and d.promoted and champion() == v5.version
    assert "do not overlap" in recorded(v5.version)[1]

    d = decide(version=int(v2.version), force=True)  # the worse one, forced
    assert d.decision == "forced" and champion() == v2.version
    decision, reason, against = recorded(v2.version)
    assert decision == "forced" and "the gate refused" in reason
    assert against == f"{name}/{v5.version}"
    assert decide(version=v2.version).decision == "unchanged"

    with pytest.raises(GanopsError, match="no such registered model"):
        promote("nobody", params=P, tracking_uri=mlflow_server)
    with pytest.raises(GanopsError, match="version 99 does not exist"):
        promote(name, version=99, params=P, tracking_uri=mlflow_server)


def test_register_names_the_model_logs_a_card_and_loads_by_alias(mlflow_server, trained, tmp_path):
    run = evaluated_copy(trained["dcgan"], tmp_path / "run", metrics_json(41.0, 40.0, 42.0))
    mv = register_run(run, tracking_uri=mlflow_server)
    assert mv.name == "dcgan-bars"
    model_ref = json.loads((run / RUN_REF_FILE).read_text())["model"]
    again = register_run(run, tracking_uri=mlflow_server)  # same weights and metrics
    assert int(again.version) == int(mv.version) + 1
    assert json.loads((run / RUN_REF_FILE).read_text())["model"] == model_ref  # not re-logged
    assert promote("dcgan-bars", version=mv.version, tracking_uri=mlflow_server).promoted

    # The model card: description of the version and card.md inside the model.
    card = MlflowClient(mlflow_server).get_model_version("dcgan-bars", mv.version).description
    for text in ("# Model card: dcgan-bars", "| FID | 41 [40, 42]", "real-vs-real floor", "| 3 |"):
        assert text in card, text
    assert f"`{mv.tags['ganops.data_version']}`" in card and "Intended use" in card
    assert mv.tags["ganops.git_commit"] in card and mv.run_id in card
    with using_tracking_uri(mlflow_server):
        model_dir = mlflow.artifacts.download_artifacts(
            f"models:/dcgan-bars/{mv.version}", dst_path=str(tmp_path / "model")
        )
    assert (Path(model_dir) / "artifacts" / "card.md").read_text() == card
    assert (Path(model_dir) / "artifacts" / "samples.png").is_file()

    # Loading by alias samples exactly what the run folder samples.
    gen = load_registered_generator("models:/dcgan-bars@champion", tracking_uri=mlflow_server)
    ref = RunGenerator.from_run_dir(run)
    for n, seed in ((6, 3), (300, 0)):  # 300 spans two of the sampler's batches
        assert torch.equal(gen.generate(n, seed)[0], ref.generate(n, seed)[0])
    assert gen.source == "models:/dcgan-bars@champion"

    with pytest.raises(GanopsError, match="expected a registry URI"):
        load_registered_generator(str(run))
    with pytest.raises(GanopsError, match="cannot load"):
        load_registered_generator("models:/dcgan-bars@nobody", tracking_uri=mlflow_server)


def test_pyfunc_signature_and_predict_for_a_conditional_family(mlflow_server, trained, tmp_path):
    run = evaluated_copy(trained["cgan"], tmp_path / "run", metrics_json(41.0, 40.0, 42.0))
    mv = register_run(run, tracking_uri=mlflow_server)
    assert mv.name == "cgan-bars"
    uri = f"models:/cgan-bars/{mv.version}"
    with using_tracking_uri(mlflow_server):
        model = mlflow.pyfunc.load_model(uri)
    sig = model.metadata.signature
    assert sig.inputs.input_names() == ["latent", "label"]
    assert sig.inputs.inputs[0].shape == (-1, 8) and sig.inputs.inputs[1].type == np.int64
    assert sig.outputs.inputs[0].shape == (-1, 1, 8, 8)

    ref = RunGenerator.from_run_dir(run)
    labels = torch.tensor([2, 0, 1, 1, 2])
    expected, _ = ref.generate(5, 7, labels)
    z = sample_latents(5, 8, 7).numpy()
    # Through the signature-checked pyfunc: latents and labels.
    out = model.predict({"latent": z, "label": labels.numpy()})
    assert out.dtype == np.float32 and np.array_equal(out, expected.numpy())
    # A seed request, through the model itself.
    impl = model.unwrap_python_model()
    seeded = impl.predict(None, {"seed": 7, "n": 5, "label": [2, 0, 1, 1, 2]})
    assert np.array_equal(seeded, expected.numpy())
    frame = pd.DataFrame({"seed": [7], "n": [5], "label": [[2, 0, 1, 1, 2]]})
    assert np.array_equal(impl.predict(None, frame), expected.numpy())
    cycled = impl.predict(None, {"seed": 7, "n": 5})  # no labels: 0, 1, 2, 0, 1 as sampling does
    assert np.array_equal(cycled, ref.generate(5, 7)[0].numpy())
    with pytest.raises(Exception, match="missing inputs"):
        model.predict({"label": labels.numpy()})


def test_cli_register_and_promote(mlflow_server, trained, tmp_path, capsys):
    app = typer.Typer()
    register_commands(app)

    @app.callback()
    def root() -> None:
        """Keeps the two commands as subcommands."""

    def cli(*args):
        app(args=list(args), standalone_mode=False)
        return capsys.readouterr().out

    run = evaluated_copy(trained["dcgan"], tmp_path / "run", metrics_json(20.0, 19.0, 21.0))
    out = cli("register", str(run), "--name", "cli-bars", "--tracking-uri", mlflow_server)
    assert "registered cli-bars version 1 (@challenger): FID 20.0 [19.0, 21.0]" in out
    out = cli("promote", "cli-bars", "--tracking-uri", mlflow_server)
    assert out.startswith("cli-bars version 1: promoted: first version")
    with pytest.raises(ConfigError, match="params file not found"):
        cli("promote", "cli-bars", "--params", str(tmp_path / "none.yaml"))
    with pytest.raises(ConfigError, match="'a/b' is not a registered model name"):
        cli("register", str(run), "--name", "a/b", "--tracking-uri", mlflow_server)
    with pytest.raises(GanopsError, match="version 7 does not exist"):
        cli("promote", "cli-bars", "--version", "7", "--tracking-uri", mlflow_server)
    (run / "metrics.json").unlink()
    with pytest.raises(GanopsError, match="no evaluation found"):
        cli("register", str(run), "--tracking-uri", mlflow_server)

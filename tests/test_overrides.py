"""No option is silently ignored: every ``--set`` names a section and key the command reads, a key
the chosen family does not read is refused, and a study never replaces a user's override.

Each refusal exits 2 with one line naming the key, before anything is written: the run folder's
files hash the same before and after, and no output folder appears.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_models.cli import main
from gan_models.config import load_params
from gan_models.data.format import write_imageset
from gan_models.errors import ConfigError
from gan_models.families import FAMILIES
from gan_models.families.base import SHARED_SECTIONS, DataSpec, StepContext
from gan_models.training.params import TrainParams
from gan_models.tuning.inputs import load_tuning

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder with tiny raw and processed data, a params file and a 2-step run trained in it."""
    root = tmp_path_factory.mktemp("overrides")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 1, 8, 8)).astype(np.uint8)
    labels = np.arange(24) % 3
    write_imageset(root / "raw" / "noise", {"images": images}, labels=labels, meta={"name": "n"})
    for split in ("train", "test"):
        write_imageset(
            root / "processed" / "noise" / split,
            {"images": images.astype(np.float32) / 127.5 - 1},
            labels=labels,
            meta={"name": "noise"},
        )
    params = root / "p.yaml"
    params.write_text(
        f"data:\n  path: {root / 'raw' / 'noise'}\n  image_size: 8\n"
        "model:\n  family: dcgan\n  width: 8\n  latent_dim: 8\n"
        "train:\n  steps: 2\n  batch_size: 8\n  progress: false\n"
    )
    assert main(["train", str(params), "--run-dir", str(root / "run"), "--no-track"]) == 0
    return root


def refused(argv: list[str], capsys, *named: str) -> str:
    """Run ``ganops argv``: exit 2, one line naming everything in ``named``, no traceback."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in named:
        assert word in err, (word, err)
    return err


@pytest.mark.parametrize(
    "override, named",
    [
        ("evaluat.n_samples=10", ["unknown section", "'evaluat'"]),
        ("train.stepz=3", ["unknown key in train", "'stepz'", "did you mean 'steps'"]),
        ("train.lr.x=1", ["train.lr is a value"]),
        ("model.mapping_layers=2", ["model.mapping_layers", "dcgan family does not read"]),
    ],
)
def test_train_refuses_before_writing(project, capsys, override, named):
    run = project / "run"
    before = snapshot(run)
    argv = ["train", str(project / "p.yaml"), "--run-dir", str(run), "--resume", "--no-track"]
    refused([*argv, "--set", override], capsys, *named)
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "override, named",
    [
        ("evaluat.n_samples=10", ["unknown section", "'evaluat'", "'evaluate', 'features'"]),
        ("evaluate.n_sample=10", ["unknown key in evaluate", "'n_sample'"]),
        ("features.inception.weigths=x", ["unknown key in features.inception", "'weigths'"]),
    ],
)
def test_evaluate_refuses_before_writing(project, capsys, override, named):
    run = project / "run"
    before = snapshot(run)
    refused(["evaluate", str(run), "--set", override], capsys, *named)
    assert snapshot(run) == before and not (run / "metrics.json").exists()


@pytest.mark.parametrize(
    "override, named",
    [
        ("regster.fid_margin=1", ["'regster'", "'register'"]),
        ("register.fid_margn=1", ["fid_margn"]),
    ],
)
def test_promote_refuses_before_touching_the_registry(project, capsys, tmp_path, override, named):
    store = tmp_path / "mlflow.db"
    argv = ["promote", "m", "--tracking-uri", f"sqlite:///{store}", "--set", override]
    refused(argv, capsys, *named)
    assert not store.exists()


def test_features_train_refuses_before_writing(project, capsys, tmp_path):
    out = tmp_path / "features"
    argv = ["features", "train", "noise", "--processed-root", str(project / "processed")]
    refused([*argv, "--out", str(out), "--set", "evaluate.n_samples=5"], capsys, "'evaluate'")
    refused([*argv, "--out", str(out), "--set", "features.domain.epoch=1"], capsys, "'epoch'")
    assert not out.exists()


@pytest.mark.parametrize(
    "command, override, named",
    [
        ("validate", "min_cout=5", ["validate.min_cout", "did you mean 'min_count'"]),
        ("validate", "preprocess.image_size=4", ["unknown section", "'preprocess'"]),
        ("preprocess", "validate.min_count=5", ["unknown section", "'validate'"]),
        ("preprocess", "preprocess.imagesize=4", ["'imagesize'"]),
    ],
)
def test_data_commands_refuse_before_writing(project, capsys, tmp_path, command, override, named):
    argv = ["data", command, "noise", "--raw-root", str(project / "raw")]
    argv += ["--report-dir" if command == "validate" else "--out-root", str(tmp_path / "out")]
    refused([*argv, "--set", override], capsys, *named)
    assert not (tmp_path / "out").exists()


def test_tune_refuses_before_writing(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    argv = ["tune", str(project / "p.yaml"), "--tune-params", str(REPO / "params/tune.yaml")]
    argv.append("--no-track")
    refused([*argv, "--set", "evaluat.n_samples=10"], capsys, "'evaluat'", "'tune'")
    refused([*argv, "--set", "tune.prunr.type=median"], capsys, "'prunr'", "'pruner'")
    # the budget sets train.steps in every trial: the override would be silently replaced
    err = refused([*argv, "--set", "train.steps=120"], capsys, "train.steps=120")
    assert "--set tune.budget.train.steps=120" in err
    # a searched key likewise
    refused([*argv, "--set", "train.lr=1e-3"], capsys, "tune.space.train.lr=null")
    refused(["bench", "tune", str(project / "p.yaml"), "--set", "evaluat.x=1"], capsys, "evaluat")
    assert not (project / "runs").exists()


def test_tune_takes_the_budget_override_and_unsearched_keys(tmp_path):
    base, tune = REPO / "params/train.yaml", REPO / "params/tune.yaml"
    sets = [
        "tune.budget.train.steps=120",
        "tune.space.train.lr=null",  # out of the search: the user's value stands
        "train.lr=0.001",
    ]
    tuning = load_tuning(base, tune, sets, root=tmp_path, track=False)
    assert tuning.tune.budget["train.steps"] == 120
    assert "train.lr" not in tuning.tune.space and tuning.base.train.lr == 0.001


# ----------------------------------------------------------------------------- family keys


@pytest.mark.parametrize(
    "family, override",
    [
        ("stylegan", "loss.n_critic=5"),
        ("cyclegan", "model.spectral_norm=true"),
        ("stylegan", "model.spectral_norm=true"),
        ("cyclegan", "model.d_norm=layer"),
        ("stylegan", "model.d_norm=layer"),
        ("cyclegan", "loss.r1_gamma=1"),
        ("srgan", "loss.r1_gamma=1"),
        ("cyclegan", "model.latent_dim=32"),
        ("dcgan", "loss.gp_weight=5"),
        ("vanilla", "model.d_norm=none"),
    ],
)
def test_a_key_the_family_does_not_read_is_refused(family, override, capsys):
    preset = REPO / f"params/{family}-mnist5k-small.yaml"
    key = override.split("=")[0]
    err = refused(["train", str(preset), "--set", override, "--dry-run"], capsys, key)
    assert f"the {family} family does not read this key" in err


def test_keys_the_family_reads_and_defaults_are_accepted(capsys):
    dcgan = str(REPO / "params/dcgan-mnist5k-small.yaml")
    stylegan = str(REPO / "params/stylegan-mnist5k-small.yaml")
    assert main(["train", dcgan, "--set", "model.spectral_norm=true", "--dry-run"]) == 0
    assert main(["train", dcgan, "--set", "model.d_norm=layer", "--dry-run"]) == 0
    # a default value is no option at all: setting it explicitly is fine for any family
    assert main(["train", stylegan, "--set", "loss.n_critic=null", "--dry-run"]) == 0
    assert main(["train", stylegan, "--set", "model.spectral_norm=false", "--dry-run"]) == 0
    assert "spectral_norm: false" in capsys.readouterr().out


def test_every_preset_loads():
    presets = sorted(REPO.glob("params/*-*.yaml"))
    assert len(presets) >= 2 * len(FAMILIES)
    for path in [*presets, REPO / "params/train.yaml", REPO / "params/best.yaml"]:
        load_params(path, TrainParams)


def test_the_search_space_cannot_propose_an_ignored_key(tmp_path):
    stylegan = REPO / "params/stylegan-mnist5k-small.yaml"
    cyclegan = REPO / "params/cyclegan-mnist5k-small.yaml"
    tune = REPO / "params/tune.yaml"
    with pytest.raises(ConfigError, match="tune.space.loss.n_critic: the stylegan family does"):
        load_tuning(stylegan, tune, ["tune.space.loss.n_critic={low: 1, high: 5}"], root=tmp_path)
    # params/tune.yaml searches the latent size, which a translation family has none of
    with pytest.raises(ConfigError, match="cyclegan family does not read model.latent_dim"):
        load_tuning(cyclegan, tune, root=tmp_path)
    load_tuning(cyclegan, tune, ["tune.space.model.latent_dim=null"], root=tmp_path)
    with pytest.raises(ConfigError, match="loss.r1_gamma: the cyclegan family does not read"):
        sets = ["tune.space.model.latent_dim=null", "tune.budget.loss.r1_gamma=1"]
        load_tuning(cyclegan, tune, sets, root=tmp_path)


# A non-default value for every key of the model and loss sections (shared, or a family's own
# option): a new key fails the coverage check below until it is given one (and each family says
# whether it reads it).
OTHER_VALUE = {
    "model.latent_dim": 5,
    "model.width": 4,
    "model.depth": 2,
    "model.spectral_norm": True,
    "model.d_norm": "none",
    "model.embed_dim": 3,
    "model.res_blocks": 2,
    "model.scale": 2,
    "model.mapping_layers": 1,
    "loss.type": "hinge",
    "loss.n_critic": 2,
    "loss.gp_weight": 3.0,
    "loss.clip": 0.05,
    "loss.r1_gamma": 1.0,
    "loss.r1_every": 2,
    "loss.cycle_weight": 3.0,
    "loss.identity_weight": 0.2,
    "loss.pool_size": 3,
    "loss.content": "ssim",
    "loss.content_weight": 0.5,
    "loss.content_network": "/nonexistent/classifier",
    "loss.adv_weight": 0.01,
    "loss.style_mixing": 0.5,
}


def one_step(family, params: TrainParams) -> list[dict[str, torch.Tensor]]:
    """Every phase's loss outputs of one step from fresh networks, all seeded."""
    size, b = 16, 4
    kind = {"cyclegan": "unpaired", "srgan": "images"}.get(family.name, "images")
    spec = DataSpec(channels=1, image_size=size, num_classes=3 if family.conditional else None)
    spec = DataSpec(**{**spec.__dict__, "kind": kind})
    torch.manual_seed(0)
    nets = family.build(params, spec)
    x = torch.rand(2 * b, 1, size, size) * 2 - 1
    batch = {"image": x[:b], "label": torch.arange(b) % 3}
    if kind == "unpaired":
        batch = {"a": x[:b], "b": x[b:]}
    ctx = StepContext(0, params, spec, torch.device("cpu"), b)
    out = []
    for phase in family.phases(params, spec):
        out.append({"_repeats": torch.tensor(phase.repeats), "_every": torch.tensor(phase.every)})
        out[-1].update(phase.loss(nets, batch if phase.needs_batch else None, ctx))
    return out


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_key_outside_reads_changes_nothing_in_the_family(name):
    """What ``Family.reads`` leaves out really is unused: changed, it leaves the networks and one
    seeded step's losses bit-identical (so refusing it takes nothing from the user)."""
    shared = {f"{s}.{k}" for s in SHARED_SECTIONS for k in getattr(TrainParams(), s).model_fields}
    shared |= {
        f"{s}.{k}" for f in FAMILIES.values() for s, m in f.options.items() for k in m.model_fields
    }
    assert set(OTHER_VALUE) == shared - {"model.family"}
    family = FAMILIES[name]
    base = TrainParams(model={"family": name, "width": 4})
    want = one_step(family, base)
    unread = sorted(k for k in OTHER_VALUE if k not in family.reads)
    assert unread, name
    for key in unread:
        section, field = key.split(".")
        changed = base.model_copy(deep=True)
        object.__setattr__(getattr(changed, section), field, OTHER_VALUE[key])  # unvalidated
        got = one_step(family, changed)
        assert [sorted(d) for d in got] == [sorted(d) for d in want], key
        for g, w in zip(got, want, strict=True):
            assert all(torch.equal(g[k], w[k]) for k in w), (name, key)


def test_with_tuning_off_the_stage_passes_any_family_through(tmp_path, monkeypatch, capsys):
    """The DVC tune stage (--when-enabled) checks the space only for a study that runs."""
    monkeypatch.chdir(tmp_path)
    cyclegan = str(REPO / "params/cyclegan-mnist5k-small.yaml")
    argv = ["tune", cyclegan, "--tune-params", str(REPO / "params/tune.yaml"), "--when-enabled"]
    assert main([*argv, "--out", "best.yaml"]) == 0
    assert load_params(tmp_path / "best.yaml", TrainParams).model.family == "cyclegan"
    on = [*argv, "--out", "on.yaml", "--set", "tune.enabled=true"]
    refused(on, capsys, "tune.space.model.latent_dim", "cyclegan family does not read")
    assert not (tmp_path / "on.yaml").exists() and not (tmp_path / "runs").exists()

"""Typed params: unknown keys and wrong types are rejected with the key's name."""

import pytest

from gan_models.cli import main
from gan_models.config import load_params, load_section
from gan_models.errors import ConfigError
from gan_models.training.params import TrainParams


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_presets_load_and_full_extends_small():
    small = load_params("params/dcgan-mnist5k-small.yaml", TrainParams)
    full = load_params("params/dcgan-mnist5k-full.yaml", TrainParams)
    assert small.name == "dcgan-mnist5k-small" and full.name == "dcgan-mnist5k-full"
    assert full.model.family == small.model.family == "dcgan"
    assert full.model.width > small.model.width and full.train.steps > small.train.steps
    assert full.data.path == small.data.path  # inherited


def test_unknown_key_named(tmp_path):
    p = write(tmp_path, "x.yaml", "train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"train\.stepz: unknown key"):
        load_params(p, TrainParams)


def test_unknown_section_named(tmp_path):
    p = write(tmp_path, "x.yaml", "trian:\n  steps: 3\n")
    with pytest.raises(ConfigError, match=r"trian: unknown key"):
        load_params(p, TrainParams)


def test_wrong_type_named(tmp_path):
    p = write(tmp_path, "x.yaml", "train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: train\.lr: .*'fast'"):
        load_params(p, TrainParams)


def test_unknown_family_named(tmp_path):
    p = write(tmp_path, "x.yaml", "model:\n  family: bigggan\n")
    with pytest.raises(ConfigError, match="unknown family 'bigggan'"):
        load_params(p, TrainParams)


def test_overrides_parse_yaml_values(tmp_path):
    p = write(tmp_path, "x.yaml", "train:\n  lr: 0.1\n")
    params = load_params(
        p, TrainParams, overrides=["train.lr=1e-4", "train.betas=[0.0, 0.9]", "model.family=wgan"]
    )
    assert params.train.lr == pytest.approx(1e-4)
    assert params.train.betas == (0.0, 0.9)
    assert params.model.family == "wgan"


@pytest.mark.parametrize("bad", ["train.lr", "=3", "train.lr.x=1"])
def test_bad_override_rejected(tmp_path, bad):
    p = write(tmp_path, "x.yaml", "train:\n  lr: 0.1\n")
    with pytest.raises(ConfigError):
        load_params(p, TrainParams, overrides=[bad])


def test_extends_cycle_and_missing_file(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_params(tmp_path / "a.yaml", TrainParams)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml", TrainParams)


def test_load_section(tmp_path):
    p = write(tmp_path, "s.yaml", "train:\n  steps: 7\n")
    assert load_section(p, "train", TrainParams.model_fields["train"].annotation).steps == 7
    with pytest.raises(ConfigError, match="missing section 'evaluate'"):
        load_section(p, "evaluate", TrainParams)


def test_cli_dry_run_prints_resolved_config(capsys):
    code = main(
        ["train", "params/dcgan-mnist5k-small.yaml", "--set", "train.lr=0.001", "--dry-run"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "lr: 0.001" in out and "family: dcgan" in out


def test_cli_bad_params_exit_2_without_traceback(tmp_path, capsys):
    p = write(tmp_path, "x.yaml", "model:\n  widht: 3\n")
    code = main(["train", str(p), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model.widht: unknown key" in err and "Traceback" not in err

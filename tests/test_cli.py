"""The CLI end to end on tiny data: train, sample (png and exact npy), bench, help."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_models.cli import app, main
from gan_models.data.format import write_imageset
from gan_models.families import FAMILIES


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1)
    write_imageset(
        tmp / "data",
        {"images": rng.integers(0, 256, (32, 1, 8, 8)).astype(np.uint8)},
        meta={"name": "noise"},
    )
    params = tmp / "p.yaml"
    params.write_text(
        f"data:\n  path: {tmp / 'data'}\n  image_size: 8\n"
        "model:\n  family: dcgan\n  width: 8\n  latent_dim: 8\n"
        "train:\n  steps: 2\n  batch_size: 8\n  progress: false\n"
    )
    assert main(["train", str(params), "--run-dir", str(tmp / "run"), "--no-track"]) == 0
    return tmp / "run"


def test_sample_npy_is_exact_and_seeded(trained_run, tmp_path, capsys):
    a, b, c = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy"
    assert main(["sample", str(trained_run), "-n", "6", "--seed", "4", "-o", str(a)]) == 0
    assert main(["sample", str(trained_run), "-n", "6", "--seed", "4", "-o", str(b)]) == 0
    assert main(["sample", str(trained_run), "-n", "6", "--seed", "5", "-o", str(c)]) == 0
    x, y, z = np.load(a), np.load(b), np.load(c)
    assert x.shape == (6, 1, 8, 8) and x.dtype == np.float32
    assert np.array_equal(x, y) and not np.array_equal(x, z)
    assert "wrote 6 samples" in capsys.readouterr().out


def test_sample_png_grid(trained_run, tmp_path):
    out = tmp_path / "g.png"
    assert main(["sample", str(trained_run), "-n", "16", "-o", str(out)]) == 0
    img = Image.open(out)
    # 4x4 grid of 8x8 images with 2 px padding, drawn at 2x: (4 * 10 + 2) * 2
    assert img.size == (84, 84)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "/nonexistent/run", "-o", "x.png"], "not a training run folder"),
        (["train", "/nonexistent/p.yaml"], "params file not found"),
        (["families", "--params-dir", "/nonexistent"], "/nonexistent: no such folder"),
    ],
)
def test_user_errors_exit_2_without_traceback(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_families_lists_every_family_with_its_presets(capsys):
    params = Path(__file__).resolve().parents[1] / "params"
    assert main(["families", "--params-dir", str(params)]) == 0
    out = capsys.readouterr().out
    blocks = {b.split()[0]: b for b in out.split("\n") if b and not b.startswith(" ")}
    assert set(blocks) == set(FAMILIES)
    for name in FAMILIES:
        for size in ("small", "full"):
            assert f"preset: {params / f'{name}-mnist5k-{size}.yaml'} (" in out, (name, size)
    assert "train.yaml" not in out and "best.yaml" not in out  # not presets
    assert "stylegan-mnist5k-full.yaml (data/processed/mnist5k, 32px, 25000 steps x 64, bf16" in out


def test_sample_rejects_unknown_suffix(trained_run, tmp_path, capsys):
    assert main(["sample", str(trained_run), "-o", str(tmp_path / "x.jpg")]) == 2
    assert "expected a .png" in capsys.readouterr().err


def _command_paths(cmd, prefix=()):
    yield prefix
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _command_paths(sub, (*prefix, name))


def test_help_at_every_level(capsys):
    import typer.main

    paths = list(_command_paths(typer.main.get_command(app)))
    assert ("train",) in paths and ("data", "fetch") in paths and ("bench", "train") in paths
    for path in paths:
        assert main([*path, "--help"]) == 0, path
        assert "Usage:" in capsys.readouterr().out


def test_bench_train_prints_json_last(capsys):
    code = main(
        [
            "bench",
            "train",
            "--image-size",
            "8",
            "--batch-size",
            "8",
            "--width",
            "8",
            "--steps",
            "3",
            "--rounds",
            "1",
        ]
    )
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    # seconds are reported to the millisecond: compare the time the rate implies
    assert 3 * 8 / result["images_per_s"] == pytest.approx(result["trainer_seconds"][0], abs=1e-3)
    assert result["ratio"] == pytest.approx(
        result["images_per_s"] / result["bare_images_per_s"], rel=0.01
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "train", "--family", "cyclegan"], "--family: expected one of ['vanilla'"),
        (["bench", "train", "--device", "tpu"], "--device: expected one of"),
        (["bench", "train", "--amp", "fp8"], "--amp: expected one of"),
        (["bench", "train", "--image-size", "12"], "--image-size: dcgan needs a power of two"),
        (["bench", "train", "--rounds", "0"], "--rounds: expected a positive number, got 0"),
        (["bench", "eval", "--run-dir", "/nonexistent/run"], "--run-dir: /nonexistent/run"),
        (["bench", "eval", "--n-samples", "1"], "--n-samples: expected at least 2"),
        (["bench", "tune", "--pruner", "sometimes"], "--pruner: expected one of ['median'"),
        (["bench", "tune", "--steps", "0"], "--steps: expected a positive number"),
        (["bench", "tune", "/nonexistent.yaml"], "/nonexistent.yaml: params file not found"),
    ],
)
def test_bench_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is written here either
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_bench_pipeline_bad_preset_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch):
    """The flow benchmark (``python -m flows.bench``) refuses a bad preset as ``ganops`` does."""
    from flows.bench import main as bench_pipeline_main

    argv, message = ["--preset", "/nonexistent.yaml"], "params file not found"
    monkeypatch.chdir(tmp_path)  # nothing is written here either
    assert bench_pipeline_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_style_options_need_a_stylegan_run(trained_run, tmp_path, capsys):
    assert (
        main(["sample", str(trained_run), "--truncation", "0.5", "-o", str(tmp_path / "x.png")])
        == 2
    )
    assert "apply to the stylegan family, not dcgan" in capsys.readouterr().err

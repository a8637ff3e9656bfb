"""The speed profile: ``exact`` changes nothing; ``fast`` trains, checkpoints and resumes."""

import numpy as np
import pytest
import torch

from gan_models.data.format import write_imageset
from gan_models.training import train
from gan_models.training.params import TrainParams
from gan_models.training.profile import resolve_profile


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (32, 3, 8, 8)).astype(np.uint8)
    path = tmp_path_factory.mktemp("profile") / "blobs"
    write_imageset(path, {"images": images}, meta={"name": "blobs", "source": "t"})
    return path


def params_for(family: str, path, profile: str, **train) -> TrainParams:
    t = {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 1, "progress": False}
    t.update(train, profile=profile)
    model = {"family": family, "width": 8, "latent_dim": 8}
    loss = {}
    if family == "stylegan":
        model["mapping_layers"] = 2
        loss = {"r1_gamma": 0.1, "r1_every": 2}
    return TrainParams(model=model, data={"path": str(path), "image_size": 8}, loss=loss, train=t)


def test_exact_profile_changes_nothing():
    p = resolve_profile("exact", "none", torch.device("cpu"))
    assert (p.amp, p.channels_last, p.tf32, p.cudnn_benchmark) == ("none", False, False, False)
    assert p.optimizer_kwargs([torch.zeros(1)]) == {}


def test_fast_profile_per_device():
    cpu = resolve_profile("fast", "none", torch.device("cpu"))
    assert cpu.amp == "none" and cpu.channels_last  # bf16 measured slower on CPU here
    assert resolve_profile("fast", "bf16", torch.device("cpu")).amp == "bf16"  # asked for
    cuda = resolve_profile("fast", "none", torch.device("cuda"))
    assert cuda.amp == "bf16" and cuda.tf32 and cuda.cudnn_benchmark and cuda.fused_optimizer
    assert resolve_profile("fast", "fp16", torch.device("cuda")).amp == "fp16"  # asked for
    assert cuda.optimizer_kwargs([torch.zeros(1)]) == {}  # fused only for CUDA weights
    with cuda.flags():
        assert torch.backends.cuda.matmul.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32  # restored


@pytest.mark.parametrize("family", ["dcgan", "stylegan"])
def test_fast_profile_trains_and_resumes(family, blobs, tmp_path):
    """A fast run stopped after its step-2 checkpoint resumes to the end with finite losses,
    beside an exact run of the same params."""
    params = params_for(family, blobs, "fast")

    def stop_at_3(info):
        if info.step == 3:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        train(params, tmp_path / "fast", callbacks=[stop_at_3])
    result = train(params, tmp_path / "fast", resume=True)
    assert result.resumed_from == 2 and result.steps == 4
    assert all(np.isfinite(v) for v in result.final_losses.values())
    exact = train(params_for(family, blobs, "exact"), tmp_path / "exact")
    assert all(np.isfinite(v) for v in exact.final_losses.values())
    a = torch.load(tmp_path / "fast/checkpoints/step_00000004.pt", weights_only=False)
    b = torch.load(tmp_path / "exact/checkpoints/step_00000004.pt", weights_only=False)
    assert a["nets"]["G"].keys() == b["nets"]["G"].keys()
    assert all(torch.isfinite(v).all() for v in a["nets"]["G"].values())

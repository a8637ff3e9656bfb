"""The explorer's static bundle: the page, onnxruntime-web, the ONNX model(s) and explorer.json.

The bundle is a folder any static host can serve (the page needs HTTP, not file://). The
page runs single-threaded WebAssembly, so it needs no cross-origin-isolation headers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_models.errors import GanopsError
from gan_models.explore.onnx_export import export_onnx, generator_kind
from gan_models.sampling import RunGenerator
from gan_models.training.generate import sample_latents
from gan_models.utils.images import to_uint8

WEB = Path(__file__).with_name("web")
# What a single-threaded WebAssembly page loads from onnxruntime-web's dist/ folder.
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_ENV = "GANOPS_ORT_WEB_DIR"
N_DIRECTIONS = 8  # sliders on the page
N_PCA_SAMPLES = 4096
N_EXAMPLES = 8  # real inputs offered by an image-to-image page


def ort_dist() -> Path:
    """onnxruntime-web's dist/ folder: $GANOPS_ORT_WEB_DIR, else the checkout's node_modules."""
    env = os.environ.get(ORT_ENV)
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [p / "node_modules/onnxruntime-web/dist" for p in [Path.cwd(), *here.parents]]
    for c in candidates:
        if all((c / f).is_file() for f in ORT_FILES):
            return c
    where = f"{ORT_ENV}={env}" if env else "node_modules/onnxruntime-web/dist"
    raise GanopsError(
        f"onnxruntime-web not found ({where} lacks {ORT_FILES[0]}): run `make setup` in the "
        f"checkout (it runs npm ci), or set {ORT_ENV} to the dist/ folder of onnxruntime-web"
    )


def _principal_directions(gen: RunGenerator, kind: str) -> dict[str, Any]:
    """Main directions of the latent space (z), or of W for StyleGAN (GANSpace, Härkönen 2020)."""
    z = sample_latents(N_PCA_SAMPLES, gen.params.model.latent_dim, seed=0)  # (N, Z)
    if kind == "style":
        with torch.no_grad():
            points = gen.nets["G"].mapping(z.to(next(gen.nets["G"].parameters()).device))[:, 0]
        points = points.float().cpu().numpy()  # (N, W)
    else:
        points = z.numpy()
    mean = points.mean(0)
    _, s, vt = np.linalg.svd(points - mean, full_matrices=False)
    k = min(N_DIRECTIONS, vt.shape[0])
    std = s[:k] / np.sqrt(len(points) - 1)
    return {
        "space": "w" if kind == "style" else "z",
        "mean": mean.tolist(),
        "components": vt[:k].tolist(),
        "std": std.tolist(),
    }


def _class_names(gen: RunGenerator) -> list[str] | None:
    k = gen.spec.num_classes
    if not gen.family.conditional or not k:
        return None
    meta = Path(gen.params.data.path) / "meta.json"
    names = None
    if meta.is_file():
        names = json.loads(meta.read_text()).get("class_names")
    if not isinstance(names, list) or len(names) != k:
        names = [str(i) for i in range(k)]
    return [str(n) for n in names]


def _write_examples(gen: RunGenerator, folder: Path) -> list[str]:
    """A few real inputs as PNGs for the image-to-image page."""
    from PIL import Image

    x = gen.inputs(N_EXAMPLES, seed=0)
    assert x is not None
    folder.mkdir()
    names = []
    for i, img in enumerate(to_uint8(x)):  # (C, h, w) uint8
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        name = f"inputs/{i}.png"
        Image.fromarray(arr).save(folder.parent / name)
        names.append(name)
    return names


def write_bundle(gen: RunGenerator, out: str | Path) -> dict[str, Any]:
    """Export ``gen`` and write the explorer bundle to ``out`` (replaced whole, atomically).

    Returns the bundle's ``explorer.json`` content.
    """
    out = Path(out)
    is_bundle = (out / "explorer.json").is_file()
    if out.exists() and not is_bundle and (not out.is_dir() or any(out.iterdir())):
        raise GanopsError(f"{out}: exists and is not an explorer bundle; choose another folder")
    dist = ort_dist()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        kind = generator_kind(gen)
        models = export_onnx(gen, tmp)
        spec = gen.spec
        info: dict[str, Any] = {
            "format": 1,
            "family": gen.family.name,
            "kind": kind,
            "source": gen.source,
            "latent_dim": gen.params.model.latent_dim,
            "channels": spec.channels,
            "image_size": spec.image_size,
            "conditional": gen.family.conditional,
            "class_names": _class_names(gen),
            "models": {
                m.file: {"inputs": m.inputs, "max_abs_diff": m.max_abs_diff} for m in models
            },
        }
        if kind == "image":
            info["input_size"] = spec.input_size or spec.image_size
            info["input_channels"] = spec.input_channels or spec.channels
            info["examples"] = _write_examples(gen, tmp / "inputs")
        else:
            info["directions"] = _principal_directions(gen, kind)
        if kind == "style":
            info["w_avg"] = gen.nets["G"].mapping.w_avg.float().cpu().tolist()
        (tmp / "ort").mkdir()
        for f in ORT_FILES:
            shutil.copyfile(dist / f, tmp / "ort" / f)
        for f in WEB.iterdir():
            if f.is_file():
                shutil.copyfile(f, tmp / f.name)
        (tmp / "explorer.json").write_text(json.dumps(info, indent=1))
        tmp.chmod(0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def bundle_size(folder: Path) -> int:
    """Bytes of every file in the bundle."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())

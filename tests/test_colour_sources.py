"""Built-in colour sources: Twemoji, Noto, the twemoji-noto pair and photo crops.

The emoji packages are built here in the published layout (``package/package.json``,
``package/emoji.json``, 64x64 PNGs with alpha under ``package/img/<vendor>/64/``) and tarred as
``npm pack`` does. Their hashes are not the published ones, so tests that read them give the
vendor table this package's hashes (the pins stay the published ones everywhere else); the
error cases run against the real pins. Only one test stands in for npm itself: a script named
``npm`` that serves the built tarball, to show that the cache spares a second run of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_models.cli import main
from gan_models.data import SOURCES, fetch, read_imageset
from gan_models.data import emoji as emoji_mod
from gan_models.errors import DataError

CATS = [
    ("Smileys & Emotion", 6),
    ("People & Body", 6),
    ("Animals & Nature", 3),
    ("Food & Drink", 3),
    ("Travel & Places", 2),
    ("Activities", 2),
    ("Objects", 2),
    ("Symbols", 2),
    ("Flags", 2),
]
SHIFT = {"twitter": 0, "google": 101}
DUP = "1F1FA-1F1F8"  # drawn as the first flag, after it in sort_order


# --- a package in the published layout, written independently of the code under test --------


def art(i: int, image_set: str) -> tuple[np.ndarray, bytes]:
    """The RGBA pixels (64, 64, 4) of emoji ``i`` and its PNG bytes: RGBA, LA or palette."""
    s = SHIFT[image_set]
    y, x = np.mgrid[:64, :64]
    buf = io.BytesIO()
    if i % 7 == 1:  # grey with alpha, as some Noto images are
        lum = ((x + y * 3 + i + s) % 256).astype(np.uint8)
        alpha = ((x * 4 + i) % 256).astype(np.uint8)
        Image.fromarray(np.stack([lum, alpha], -1), mode="LA").save(buf, "PNG")
        rgba = np.stack([lum, lum, lum, alpha], -1)
    elif i % 7 == 2:  # palette with a transparent index, as some Twemoji images are
        idx = ((x // 16 + y // 16 + i) % 4).astype(np.uint8)
        colours = np.array([[0, 0, 0], [200, 10 + s, 30], [5, 250, 60], [90, 90, i]], np.uint8)
        im = Image.fromarray(idx, mode="P")
        im.putpalette(colours.flatten().tolist())
        im.info["transparency"] = 0
        im.save(buf, "PNG", transparency=0)
        rgba = np.concatenate([colours[idx], np.where(idx == 0, 0, 255)[..., None]], -1)
    else:
        r, g, b = (x * 4 + i * 7) % 256, (y * 4 + s) % 256, np.full_like(x, (i * 37 + s) % 256)
        alpha = (x + y * 2 + i) % 256
        alpha[:8, :8], alpha[-8:, -8:] = 0, 255
        rgba = np.stack([r, g, b, alpha], -1).astype(np.uint8)
        Image.fromarray(rgba, mode="RGBA").save(buf, "PNG")
    return rgba.astype(np.uint8), buf.getvalue()


def on_white(rgba: np.ndarray) -> np.ndarray:
    """(64, 64, 4) -> (3, 64, 64): straight alpha over white, rounded half up."""
    rgb, a = rgba[..., :3].astype(np.int64), rgba[..., 3:].astype(np.int64)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8).transpose(2, 0, 1)


def entries() -> list[dict]:
    """emoji.json: the categories above, listed in reverse of their sort_order, plus a
    Component swatch, an emoji only Twemoji draws and one drawn as an earlier one (``art``: the
    drawing's index; ``i`` and ``art`` are not written)."""
    out, i = [], 0
    for cat, n in CATS:
        for _ in range(n):
            cp = f"1F{0x600 + i:03X}"
            out.append({"unified": cp, "category": cat, "image": f"{cp.lower()}.png", "i": i})
            i += 1
    for e in out:
        e["sort_order"] = 1000 - e["i"]
    out[3]["skin_variations"] = {
        "1F3FB": {"unified": f"{out[3]['unified']}-1F3FB", "image": "skin.png"}
    }
    out.append({"unified": "1F3FB", "category": "Component", "image": "1f3fb.png", "i": i})
    out.append(
        {"unified": "1FAE8", "category": "Smileys & Emotion", "image": "1fae8.png", "i": i + 1}
    )
    first_flag = next(e for e in out if e["category"] == "Flags")
    out.append(
        {
            "unified": DUP,
            "category": "Flags",
            "image": "dup.png",
            "i": i + 2,
            "art": first_flag["i"],
        }
    )
    for e in out:
        e["sort_order"] = e.get("sort_order", 5000 + e["i"])
        e["has_img_twitter"] = True
        e["has_img_google"] = e["unified"] != "1FAE8"
        e["skin_variations"] = e.get("skin_variations")
        e["art"] = e.get("art", e["i"])
    return out[::-1]


def dup_original() -> str:
    """The codepoint whose drawing DUP repeats."""
    es = entries()
    art_of_dup = next(e["art"] for e in es if e["unified"] == DUP)
    return next(e["unified"] for e in es if e["i"] == art_of_dup)


def build_package(root: Path, vendor: str, *, version: str = "16.0.0") -> Path:
    """``root/NAME-VERSION.tgz`` of ``vendor`` ("twemoji" or "noto"); returns its path."""
    v = emoji_mod.VENDORS[vendor]
    image_set = v.image_set
    files = {
        "package.json": json.dumps({"name": v.package.name, "version": version}).encode(),
        "README.md": b"emoji data\n",
    }
    es = entries()
    files["emoji.json"] = json.dumps([{k: e[k] for k in e if k not in ("i", "art")} for e in es])
    for e in es:
        if e[f"has_img_{image_set}"]:
            files[f"img/{image_set}/64/{e['image']}"] = art(e["art"], image_set)[1]
    files[f"img/{image_set}/64/skin.png"] = art(99, image_set)[1]
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"{v.package.name}-{version}.tgz"
    with tarfile.open(out, "w:gz") as tar:
        for name, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def expected(image_set: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Codepoints, images (N, 3, 64, 64) and labels the source must give, in sort_order: not
    the Component swatch, nor the repeated drawing."""
    es = sorted(
        (
            e
            for e in entries()
            if e[f"has_img_{image_set}"] and e["category"] != "Component" and e["unified"] != DUP
        ),
        key=lambda e: e["sort_order"],
    )
    cats = [c for c, _ in CATS]
    return (
        [e["unified"] for e in es],
        np.stack([on_white(art(e["i"], image_set)[0]) for e in es]),
        np.array([cats.index(e["category"]) for e in es]),
    )


def pin(monkeypatch, vendor: str, tgz: Path | None = None, content: str | None = None) -> None:
    """Give the vendor table the hashes of the package built here."""
    v = emoji_mod.VENDORS[vendor]
    changes = {}
    if tgz is not None:
        changes["sha256"] = hashlib.sha256(tgz.read_bytes()).hexdigest()
    if content is not None:
        changes["content_sha256"] = content
    monkeypatch.setitem(
        emoji_mod.VENDORS,
        vendor,
        dataclasses.replace(v, package=dataclasses.replace(v.package, **changes)),
    )


def unpack(tgz: Path, dest: Path) -> Path:
    with tarfile.open(tgz) as tar:
        tar.extractall(dest, filter="data")
    return dest / "package"


def digest(root: Path, image_set: str) -> str:
    """The documented digest of an unpacked copy: sorted lines "<sha256>  package/<path>"."""
    es = [e for e in entries() if e[f"has_img_{image_set}"] and e["category"] != "Component"]
    rel = ["emoji.json"] + [f"img/{image_set}/64/{e['image']}" for e in es]
    lines = "".join(
        f"{hashlib.sha256((root / r).read_bytes()).hexdigest()}  package/{r}\n" for r in sorted(rel)
    )
    return hashlib.sha256(lines.encode()).hexdigest()


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


# --- the emoji sources ----------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", ["twemoji", "noto"])
def test_emoji_from_tarball_path(tmp_path, monkeypatch, capsys, vendor):
    tgz = build_package(tmp_path / "pkg", vendor)
    pin(monkeypatch, vendor, tgz)
    out_root = tmp_path / "raw"
    argv = ["data", "fetch", vendor, "--name", "e", "--path", str(tgz), "--out-root", str(out_root)]
    assert main(argv) == 0
    n = {"twemoji": 29, "noto": 28}[vendor]  # 1FAE8 is Twemoji's alone
    assert f"e [{vendor}]: {n} images 3x64x64 uint8, 9 classes" in capsys.readouterr().out
    image_set = emoji_mod.VENDORS[vendor].image_set
    cps, images, labels = expected(image_set)
    ds = read_imageset(out_root / "e", verify=True)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    meta = ds.meta
    assert meta["codepoints"] == {"images": cps}  # no Component swatch, skin tone, repeat
    assert meta["origin"]["duplicates"] == {DUP: dup_original()}
    assert meta["file_names"] == [f"img/{image_set}/64/{c.lower()}.png" for c in cps]
    assert meta["class_names"] == [c for c, _ in CATS] and meta["num_classes"] == 9
    v = emoji_mod.VENDORS[vendor]
    assert meta["licence"]["spdx"] == {"twemoji": "CC-BY-4.0", "noto": "Apache-2.0"}[vendor]
    assert meta["licence"]["attribution"] == v.licence["attribution"]
    assert meta["origin"]["version"] == "16.0.0" and meta["origin"]["sha256"] == v.package.sha256


def test_unpacked_copy_is_checked_by_its_digest(tmp_path, monkeypatch):
    tgz = build_package(tmp_path / "pkg", "twemoji")
    root = unpack(tgz, tmp_path / "unpacked")
    pin(monkeypatch, "twemoji", content=digest(root, "twitter"))
    meta = fetch("twemoji", "e", path=root.parent, out_root=tmp_path / "raw")  # above package/
    np.testing.assert_array_equal(
        read_imageset(tmp_path / "raw" / "e").images, expected("twitter")[1]
    )
    assert meta["origin"]["verified"].startswith("digest")
    some = root / "img" / "twitter" / "64" / "1f600.png"
    some.write_bytes(art(5, "twitter")[1])  # another drawing under this emoji's name
    with pytest.raises(
        DataError, match=r"unpacked.*digest of the files read [0-9a-f]{64} does not match"
    ):
        fetch("twemoji", "e2", path=root, out_root=tmp_path / "raw")
    assert not (tmp_path / "raw" / "e2").exists()


def test_npm_pack_once_then_the_cache(tmp_path, monkeypatch):
    """The first fetch runs `npm pack NAME@VERSION` (a stand-in serving the built tarball); the
    second finds the verified tarball in the cache and runs nothing, with no npm on PATH."""
    tgz = build_package(tmp_path / "pkg", "noto")
    pin(monkeypatch, "noto", tgz)
    bin_dir, log = tmp_path / "bin", tmp_path / "npm.log"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        '[ "$1 $2 $3" = "pack emoji-datasource-google@16.0.0 --json" ] || exit 9\n'
        f"/bin/cp {tgz} .\n"
    )
    npm.chmod(0o755)
    cache = tmp_path / "cache"
    monkeypatch.setenv("PATH", str(bin_dir))
    fetch("noto", "n1", out_root=tmp_path / "raw", cache_dir=cache)
    assert log.read_text().splitlines() == ["pack emoji-datasource-google@16.0.0 --json"]
    assert sorted(p.name for p in (cache / "npm").iterdir()) == [tgz.name]  # no temp folder left
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    fetch("noto", "n2", out_root=tmp_path / "raw", cache_dir=cache)
    assert len(log.read_text().splitlines()) == 1
    a, b = (read_imageset(tmp_path / "raw" / n) for n in ("n1", "n2"))
    np.testing.assert_array_equal(a.images, expected("google")[1])
    np.testing.assert_array_equal(a.images, b.images)
    assert a.meta["origin"] == b.meta["origin"]  # npm or cache: the same meta.json


def _one_line_error(rc: int, err: str, *parts: str) -> None:
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    for part in parts:
        assert part in err, (part, err)


def test_cli_integrity_failure_names_file_and_hashes(tmp_path, capsys):
    tgz = build_package(tmp_path / "pkg", "twemoji")  # right name and version, other bytes
    got = hashlib.sha256(tgz.read_bytes()).hexdigest()
    want = emoji_mod.VENDORS["twemoji"].package.sha256
    out_root = tmp_path / "raw"
    argv = [
        "data",
        "fetch",
        "twemoji",
        "--name",
        "e",
        "--path",
        str(tgz),
        "--out-root",
        str(out_root),
    ]
    rc, err = run_cli(argv, capsys)
    _one_line_error(rc, err, str(tgz), f"sha256 {got}", f"pinned {want}")
    assert not out_root.exists() or list(out_root.iterdir()) == []


def test_cli_wrong_version(tmp_path, capsys):
    tgz = build_package(tmp_path / "pkg", "noto", version="15.1.2")
    argv = ["data", "fetch", "noto", "--name", "e", "--path", str(tgz), "--out-root", str(tmp_path)]
    rc, err = run_cli(argv, capsys)
    _one_line_error(
        rc,
        err,
        str(tgz),
        "version '15.1.2', expected '16.0.0'",
        "npm pack emoji-datasource-google@16.0.0",
    )
    root = unpack(tgz, tmp_path / "u")
    rc, err = run_cli([*argv[:6], str(root), *argv[7:]], capsys)
    _one_line_error(rc, err, str(root / "package.json"), "version '15.1.2'")


def test_cli_not_a_tarball(tmp_path, capsys):
    bad = tmp_path / "emoji-datasource-twitter-16.0.0.tgz"
    bad.write_bytes(b"not a tarball")
    rc, err = run_cli(
        [
            "data",
            "fetch",
            "twemoji",
            "--name",
            "e",
            "--path",
            str(bad),
            "--out-root",
            str(tmp_path / "raw"),
        ],
        capsys,
    )
    _one_line_error(rc, err, str(bad), "not a readable npm package tarball")
    rc, err = run_cli(
        [
            "data",
            "fetch",
            "twemoji-noto",
            "--name",
            "e",
            "--path",
            str(tmp_path / "nope"),
            "--out-root",
            str(tmp_path / "raw"),
        ],
        capsys,
    )
    _one_line_error(rc, err, str(tmp_path / "nope"), "no such file or folder")


def test_cli_without_npm_says_what_to_install_or_pass(tmp_path):
    """The real command, in a child process whose PATH holds no npm and whose cache is empty."""
    env = {**os.environ, "PATH": str(tmp_path / "empty"), "GANOPS_CACHE_DIR": str(tmp_path / "c")}
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gan_models.cli import main; raise SystemExit(main())",
            "data",
            "fetch",
            "twemoji",
            "--name",
            "e",
            "--out-root",
            str(tmp_path / "raw"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_line_error(
        run.returncode,
        run.stderr,
        "npm",
        "not on PATH",
        "install Node.js with npm",
        "--path FILE.tgz",
        "emoji-datasource-twitter@16.0.0",
    )
    assert not (tmp_path / "raw").exists()


# --- the pair ------------------------------------------------------------------------------------


def pair_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "pkgs"
    for vendor in ("twemoji", "noto"):
        pin(monkeypatch, vendor, build_package(d, vendor))
    return d


def test_pair_keeps_codepoints_aligned_and_halves_disjoint(tmp_path, monkeypatch):
    d = pair_dir(tmp_path, monkeypatch)
    meta = fetch("twemoji-noto", "p", path=d, out_root=tmp_path / "raw")
    ds = read_imageset(tmp_path / "raw" / "p", verify=True)
    cps_a, cps_b = meta["codepoints"]["a"], meta["codepoints"]["b"]
    tw_cps, tw_images, tw_labels = expected("twitter")
    go_cps, go_images, _ = expected("google")
    shared = [c for c in tw_cps if c in go_cps]  # 1FAE8 is Twemoji's alone
    assert len(shared) == 28 and "1FAE8" not in cps_a + cps_b and DUP not in cps_a + cps_b
    assert not set(cps_a) & set(cps_b) and sorted(cps_a + cps_b) == sorted(shared)
    # per category, a holds the smaller half
    cats = [c for c, _ in CATS]
    for k, (cat, n) in enumerate(CATS):
        in_a = sum(tw_labels[tw_cps.index(c)] == k for c in cps_a)
        assert in_a == n // 2, cat
    assert meta["categories"]["a"] == [cats[tw_labels[tw_cps.index(c)]] for c in cps_a]
    # each image is its vendor's drawing of the codepoint recorded beside it
    np.testing.assert_array_equal(ds.arrays["a"], tw_images[[tw_cps.index(c) for c in cps_a]])
    np.testing.assert_array_equal(ds.arrays["b"], go_images[[go_cps.index(c) for c in cps_b]])
    # the counterpart of a Twemoji image is Noto's drawing of the same emoji, and back
    np.testing.assert_array_equal(
        emoji_mod.counterparts(cps_a, "noto", path=d), go_images[[go_cps.index(c) for c in cps_a]]
    )
    np.testing.assert_array_equal(
        emoji_mod.counterparts(cps_b[:3], "twemoji", path=d),
        tw_images[[tw_cps.index(c) for c in cps_b[:3]]],
    )
    np.testing.assert_array_equal(  # a repeated drawing's codepoint gives the drawing kept
        emoji_mod.counterparts([DUP], "noto", path=d)[0], go_images[go_cps.index(dup_original())]
    )
    with pytest.raises(DataError, match="no drawing of 1 codepoint"):
        emoji_mod.counterparts(["1FAE8"], "noto", path=d)
    assert (
        meta["licence"]["a"]["spdx"] == "CC-BY-4.0" and meta["licence"]["b"]["spdx"] == "Apache-2.0"
    )
    again = fetch("twemoji-noto", "p2", path=d, out_root=tmp_path / "raw")  # seeded: same deal
    assert again["codepoints"] == meta["codepoints"] and again["sha256"] == meta["sha256"]


def test_pair_codepoints_follow_preprocess_splits(tmp_path, monkeypatch):
    from gan_models.data.preprocess import PreprocessParams, preprocess_dataset, split_indices

    d = pair_dir(tmp_path, monkeypatch)
    meta = fetch("twemoji-noto", "p", path=d, out_root=tmp_path / "raw")
    params = PreprocessParams(image_size=64, progress=False, workers=1)
    preprocess_dataset(tmp_path / "raw" / "p", tmp_path / "proc" / "p", params)
    got = emoji_mod.split_codepoints(tmp_path / "raw" / "p", tmp_path / "proc" / "p", "test")
    raw = read_imageset(tmp_path / "raw" / "p")
    test = read_imageset(tmp_path / "proc" / "p" / "test")
    for k in ("a", "b"):
        rows = split_indices(len(raw.arrays[k]), None, params)["test"]
        assert got[k] == [meta["codepoints"][k][i] for i in rows] and len(got[k]) >= 1
        diff = np.abs(test.arrays[k].astype(int) - raw.arrays[k][rows].astype(int))
        assert diff.max() <= 1  # the same images, through preprocess's float round trip


# --- photos ----------------------------------------------------------------------------------------


def test_photos_crop_deterministically(tmp_path):
    from importlib import resources

    from gan_models.data.photos import PHOTOS

    m1 = fetch("photos", "ph", out_root=tmp_path / "raw", image_size=128)
    m2 = fetch("photos", "ph2", out_root=tmp_path / "raw", image_size=128)
    assert m1["sha256"] == m2["sha256"] and m1["file_names"] == m2["file_names"]
    ds = read_imageset(tmp_path / "raw" / "ph", verify=True)
    assert ds.images.shape[1:] == (3, 128, 128) and len(ds.images) == 246
    assert m1["class_names"] == [p.name for p in PHOTOS] and len(PHOTOS) == 9
    boxes: dict[str, list] = {}
    full: dict[str, np.ndarray] = {}
    for img, label, name in zip(ds.images, ds.labels, m1["file_names"], strict=True):
        photo = PHOTOS[label]
        prefix = f"{photo.resource}/{photo.file}["
        assert name.startswith(prefix)
        (y0, y1), (x0, x1) = (map(int, s.split(":")) for s in name[len(prefix) : -1].split(","))
        boxes.setdefault(photo.name, []).append((y0, y1, x0, x1))
        if photo.name not in full:
            with resources.as_file(resources.files(photo.resource) / photo.file) as p:
                full[photo.name] = np.asarray(Image.open(p).convert("RGB"))  # (H, W, 3)
        np.testing.assert_array_equal(img, full[photo.name][y0:y1, x0:x1].transpose(2, 0, 1))
        assert img.std() >= 4  # no flat crops (retina's black corners)
    for name, bs in boxes.items():  # crops of one photo never overlap
        for i, (a0, a1, b0, b1) in enumerate(bs):
            for c0, c1, d0, d1 in bs[i + 1 :]:
                assert a1 <= c0 or c1 <= a0 or b1 <= d0 or d1 <= b0, name
    assert set(m1["licence"]) == {p.name for p in PHOTOS}
    assert "public domain" in m1["licence"]["astronaut"] and "CC0" in m1["licence"]["chelsea"]
    assert "creativecommons.org/licenses/by/2.0" in m1["licence"]["china"]
    with pytest.raises(DataError, match="larger than every photo"):
        fetch("photos", "big", out_root=tmp_path / "raw", image_size=2000)


# --- the listing -------------------------------------------------------------------------------------


def test_sources_list_licences(capsys):
    assert main(["data", "sources"]) == 0
    out = capsys.readouterr().out
    for name in ("twemoji", "noto", "twemoji-noto", "photos"):
        assert SOURCES[name].licence and f"licence: {SOURCES[name].licence}" in out
    for key, v in emoji_mod.VENDORS.items():
        assert v.licence["spdx"] in SOURCES[key].licence
        assert v.licence["attribution"] in SOURCES[key].licence
        assert v.licence["url"] in SOURCES[key].licence

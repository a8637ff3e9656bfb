"""Resumable, checksummed downloads of the canonical dataset files.

A file is fetched into ``DEST/NAME.part`` (resuming with an HTTP ``Range`` request when a partial
file is already there), its sha256 is checked, and only then is it renamed to ``DEST/NAME``.
A finished file is re-verified before reuse. Mirrors are tried in order; a failed transfer keeps
the ``.part`` file so that the next attempt, or the next run, picks up where it stopped.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from gan_models.errors import DataError
from gan_models.utils.io import sha256_file

USER_AGENT = "ganops-data-fetch/0.1 (+python-urllib)"
CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


@dataclass(frozen=True)
class RemoteFile:
    """One original file of a dataset: its name, expected sha256 and size, and where to get it."""

    name: str
    sha256: str
    size: int | None
    urls: tuple[str, ...]


class _RestartError(Exception):
    """The server answered a range we did not ask for; the partial file must be discarded."""


def cache_dir_default() -> Path:
    """Where downloads are kept: ``$GANOPS_CACHE_DIR`` or ``~/.cache/ganops``, then ``downloads``."""
    root = os.environ.get("GANOPS_CACHE_DIR") or Path.home() / ".cache" / "ganops"
    return Path(root) / "downloads"


def download(
    file: RemoteFile,
    dest_dir: str | Path,
    *,
    timeout: float = 60.0,
    attempts: int = 3,
    progress: bool | None = None,
) -> tuple[Path, str]:
    """Download ``file`` into ``dest_dir`` and return ``(path, where_from)``.

    ``where_from`` is the URL used, or ``"cache"`` when a verified copy was already there.
    Each mirror gets ``attempts`` tries, each resuming from the ``.part`` file. Raises
    :class:`DataError` when no mirror delivers a file with the expected sha256.
    """
    dest_dir = Path(dest_dir)
    final = dest_dir / file.name
    part = dest_dir / f"{file.name}.part"
    if final.is_file():
        if sha256_file(final) == file.sha256:
            return final, "cache"
        # A cached file that no longer matches was altered after it was verified: fetch it anew.
        final.unlink()
    dest_dir.mkdir(parents=True, exist_ok=True)

    failures: list[str] = []
    for url in file.urls:
        for _ in range(max(1, attempts)):
            try:
                _transfer(url, part, file.size, timeout=timeout, progress=progress)
            except _RestartError:
                part.unlink(missing_ok=True)
                failures.append(f"{url}: the server did not resume at the requested byte")
                continue
            except urllib.error.HTTPError as e:
                failures.append(f"{url}: HTTP {e.code} {e.reason}")
                break  # an HTTP error status will not change on a retry
            except (OSError, http.client.HTTPException) as e:
                failures.append(f"{url}: {type(e).__name__}: {e}")
                continue
            got = sha256_file(part)
            if got != file.sha256:
                part.unlink(missing_ok=True)
                failures.append(
                    f"{url}: sha256 {got} does not match the expected {file.sha256} "
                    "(the download was removed)"
                )
                break
            os.replace(part, final)
            return final, url

    # Retries of one mirror often fail the same way; report each distinct failure once.
    counts: dict[str, int] = {}
    for msg in failures:
        counts[msg] = counts.get(msg, 0) + 1
    lines = [msg if n == 1 else f"{msg} ({n} attempts)" for msg, n in counts.items()]
    kept = part.stat().st_size if part.is_file() else 0
    resume = (
        f"; {kept} bytes are kept in {part}, run the same command again to resume" if kept else ""
    )
    raise DataError(
        f"could not download {file.name} (expected sha256 {file.sha256}):\n  "
        + "\n  ".join(lines)
        + resume
        + "\nWithout internet access, pass --path DIR holding the original files."
    )


def _transfer(
    url: str, part: Path, size: int | None, *, timeout: float, progress: bool | None
) -> None:
    """Append the missing bytes of ``url`` to ``part`` (or write it whole if resuming fails)."""
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return  # complete already; the caller verifies the checksum
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Range not satisfiable: either the part is complete or it is longer than the file.
            m = _UNSATISFIED_RANGE.search(e.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == offset:
                return
            raise _RestartError from None
        raise
    with response:
        mode = "wb"
        total = response.headers.get("Content-Length")
        total = int(total) if total is not None else None
        if offset and response.status == 206:
            m = _CONTENT_RANGE.search(response.headers.get("Content-Range", ""))
            if m is None or int(m.group(1)) != offset:
                raise _RestartError
            mode = "ab"
            total = int(m.group(3)) if m.group(3) != "*" else None
        else:
            offset = 0  # the server ignored the Range header and sends the whole file
        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=None if progress is None else not progress,
                leave=False,
            ) as bar,
        ):
            received = 0
            while chunk := response.read(CHUNK):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        # http.client returns a short body without raising when the connection drops early.
        if total is not None and offset + received < total:
            raise ConnectionError(f"connection closed after {offset + received} of {total} bytes")

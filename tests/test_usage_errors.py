"""Usage errors as a user meets them: the installed ``ganops`` entry point, run as a process.

Each kind of usage error (no command, a mistyped command, an unknown flag, a missing argument, a
bad value, a command group alone or with a mistyped sub-command) prints the short usage and
exits 2, never a traceback.
"""

import subprocess
import sys
from pathlib import Path

import pytest

GANOPS = Path(sys.executable).parent / "ganops"  # the console script pip installed


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(GANOPS), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_entry_point_is_installed():
    assert GANOPS.is_file(), f"{GANOPS}: run `make setup` (pip install -e .)"


def test_ganops_alone_prints_the_help(tmp_path):
    proc = run(cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert "Traceback" not in out
    assert "Usage: ganops [OPTIONS] COMMAND [ARGS]..." in out
    for command in ("train", "evaluate", "tune", "data", "bench", "up"):
        assert f" {command} " in out, command


@pytest.mark.parametrize(
    "argv, usage, message",
    [
        (["explroe"], "Usage: ganops [OPTIONS] COMMAND", "No such command 'explroe'"),
        (["train", "--bogus"], "Usage: ganops train [OPTIONS]", "No such option: --bogus"),
        (["data", "fetch"], "Usage: ganops data fetch [OPTIONS]", "Missing argument 'source'"),
        (["data", "fecth"], "Usage: ganops data [OPTIONS] COMMAND", "No such command 'fecth'"),
        (["data"], "Usage: ganops data [OPTIONS] COMMAND", "fetch"),  # a group alone: its help
        (["bench"], "Usage: ganops bench [OPTIONS] COMMAND", "train"),
        (["bench", "train", "--steps", "many"], "Usage: ganops bench train", "'--steps'"),
        # an option without its value: Click knows no command context there, so no usage line
        (["tune", "params/train.yaml", "--trials"], "Error:", "'--trials' requires an argument"),
        (["features", "train"], "Usage: ganops features train", "Missing argument 'name'"),
        (["sample", "runs/x", "-n", "2", "extra"], "Usage: ganops sample", "unexpected extra"),
    ],
)
def test_usage_errors_print_the_usage_and_exit_2(argv, usage, message, tmp_path):
    proc = run(*argv, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert usage in out and message in out, out
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_help_exits_0(tmp_path):
    proc = run("train", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "Usage: ganops train" in proc.stdout

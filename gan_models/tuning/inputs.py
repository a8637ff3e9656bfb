"""What a study is: its resolved inputs (:class:`Tuning`), its name, and its folders.

A study is identified by its name: ``tune.study``, or the base params' name plus
:func:`signature`, a hash of the training params, budget, space and objectives. Its files lie in
``runs/tune/STUDY`` (one run folder per trial, shared by a trial's retries). The functions here
also map a trial's stored params to the training params it trains; nothing here opens a storage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gan_models.config import apply_overrides, load_params, read_params_yaml, validate_model
from gan_models.errors import ConfigError
from gan_models.training.params import TrainParams
from gan_models.tuning.config import TuneParams, apply_values, check_space, choice_value

TUNE_ROOT = Path("runs") / "tune"
SUMMARY_FILE = "summary.json"


@dataclass
class Tuning:
    """A study's resolved inputs, shared by the controller and its workers."""

    base_path: Path  # the training params the trials start from
    tune_path: Path  # params/tune.yaml
    overrides: list[str]  # the --set items as given (tune.* and training keys)
    tune: TuneParams
    base: TrainParams  # base_path with the training overrides, before the budget
    root: Path  # project root: relative paths are relative to it
    study_name: str
    storage_url: str
    track: bool = True
    tracking_uri: str | None = None

    @property
    def study_dir(self) -> Path:
        return self.root / TUNE_ROOT / self.study_name

    def trial_dir(self, root_number: int) -> Path:
        return self.study_dir / f"trial_{root_number:04d}"

    def trial_args(self, number: int, parent_run: str | None) -> list[str]:
        """``ganops`` arguments that run trial ``number`` of this study, in any process."""
        return trial_command(
            str(self.base_path),
            str(self.tune_path),
            self.overrides,
            self.study_name,
            self.storage_url,
            number,
            parent_run,
            self.track,
            self.tracking_uri,
        )


def trial_command(
    params: str,
    tune_params: str,
    overrides: list[str],
    study: str,
    storage: str,
    trial: int,
    parent_run: str | None,
    track: bool,
    tracking_uri: str | None,
) -> list[str]:
    """``ganops tune ... --trial N``: a worker that resolves exactly the controller's inputs."""
    args = ["tune", params, "--tune-params", tune_params]
    for item in overrides:
        args += ["--set", item]
    args += ["--study", study, "--storage", storage, "--trial", str(trial)]
    if parent_run:
        args += ["--parent-run", parent_run]
    if not track:
        args.append("--no-track")
    elif tracking_uri:
        args += ["--tracking-uri", tracking_uri]
    return args


def signature(tune: TuneParams, base: TrainParams) -> str:
    """What makes two runs the same study: training params, budget, space and objectives."""
    blob = {
        "base": base.model_copy(update={"name": None, "tuned": None}).to_dict(),
        "budget": tune.budget,
        "space": {k: v.model_dump(mode="json") for k, v in sorted(tune.space.items())},
        "objectives": tune.objectives,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:8]


def load_tuning(
    base_path: str | Path,
    tune_path: str | Path = "params/tune.yaml",
    overrides: list[str] | None = None,
    *,
    study: str | None = None,
    storage: str | None = None,
    trials: int | None = None,
    workers: int | None = None,
    pool: str | None = None,
    track: bool = True,
    tracking_uri: str | None = None,
    root: Path | None = None,
) -> Tuning:
    """Read and check a study's inputs: ``tune.*`` overrides go to params/tune.yaml, the rest
    to the training params. Raises ConfigError naming the file and key on any bad input."""
    from gan_models.utils.paths import project_root

    overrides = list(overrides or [])
    tune_sets = [o for o in overrides if o.split("=", 1)[0].startswith("tune.")]
    train_sets = [o for o in overrides if o not in tune_sets]
    tune = load_tune(Path(tune_path), tune_sets)
    cli = {"study": study, "storage": storage, "trials": trials, "workers": workers, "pool": pool}
    data = tune.model_dump() | {k: v for k, v in cli.items() if v is not None}
    tune = validate_model(TuneParams, data, f"{tune_path} [tune] with the command's options")
    base = load_params(base_path, TrainParams, train_sets)
    check_space(tune, base, str(tune_path), train_sets)
    root = root or project_root()
    name = tune.study or f"{base.name}-{signature(tune, base)}"
    return Tuning(
        Path(base_path),
        Path(tune_path),
        overrides,
        tune,
        base,
        root,
        name,
        tune.storage_url(root),
        track,
        tracking_uri,
    )


def load_tune(path: Path, overrides: list[str]) -> TuneParams:
    """The ``tune`` section with ``--set tune.key=value`` applied.

    Space and budget keys hold dots themselves: ``tune.space.train.lr={low: 1e-5, high: 1e-3}``
    replaces the whole entry ``train.lr``.
    """
    import yaml

    whole = ("tune.space.", "tune.budget.")
    data = apply_overrides(
        read_params_yaml(path), [o for o in overrides if not o.startswith(whole)]
    )
    section = data.get("tune")
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: missing section 'tune'")
    for item in overrides:
        if item.startswith(whole):
            key, _, raw = item.partition("=")
            group, _, entry = key[len("tune.") :].partition(".")
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError as e:
                raise ConfigError(f"--set {key}: not valid YAML ({e})") from None
            if not isinstance(section.get(group), dict):
                section[group] = {}
            section[group][entry] = value
    return validate_model(TuneParams, section, f"{path} [tune]")


def distributions(tuning: Tuning) -> dict[str, Any]:
    """The search space as Optuna distributions, one per training-params key."""
    return {k: p.distribution() for k, p in tuning.tune.space.items()}


def trial_values(tuning: Tuning, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored params as training-params values (JSON-encoded choices decoded)."""
    return {k: choice_value(params[k], p) for k, p in tuning.tune.space.items() if k in params}


def trial_params(tuning: Tuning, values: dict[str, Any], name: str) -> TrainParams:
    """The training params of a trial: base, then the budget, then the trial's values."""
    params = apply_values(apply_values(tuning.base, tuning.tune.budget), values)
    return params.model_copy(update={"name": name})

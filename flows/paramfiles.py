"""Flow parameters into the params files the DVC stages read, as ``dvc exp run -S`` does.

The flows never pass hyperparameters to a command directly: they write them into
``params/*.yaml`` and let DVC run the stages, so a Prefect run and a ``dvc repro`` of the same
files compute the same thing and leave the same record (dvc.lock). Which file holds a section
is read from dvc.yaml (each stage lists its params); sections no stage lists fall back to
``params/SECTION.yaml`` (e.g. ``register``).

Every file is rewritten atomically and only after its new content loads through the same typed
loader its command uses, so a bad override is refused with the file and key named and nothing
is written. Comments and key order survive (ruamel.yaml round trip).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from flows.params import OVERRIDE_RE, PipelineParams
from gan_models.config import parse_overrides
from gan_models.errors import ConfigError
from gan_models.utils.io import atomic_path

DVC_FILE = "dvc.yaml"
# The sections of the training params file: a preset replaces them as a whole.
TRAIN_SECTIONS = ("data", "model", "loss", "train")
# Pipeline settings a preset does not normally carry; kept from the current file unless it does.
PIPELINE_KEYS = (("train", "fid_every"), ("train", "fid_samples"))


def _yaml() -> YAML:
    y = YAML()  # round trip: comments, key order and quoting are kept
    y.preserve_quotes = True
    y.width = 100
    y.indent(mapping=2, sequence=4, offset=2)
    # null stays "null" (ruamel writes an empty value), as the files and the comments say
    y.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return y


def read_dvc_yaml(project: Path) -> dict[str, Any]:
    path = project / DVC_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found; the project directory must hold the DVC pipeline")
    return yaml.safe_load(path.read_text()) or {}


def section_files(project: Path) -> dict[str, Path]:
    """section -> the params file dvc.yaml reads it from (``params/data.yaml`` for ``fetch``)."""
    out: dict[str, Path] = {}
    doc = read_dvc_yaml(project)
    for entry in doc.get("vars") or []:
        if isinstance(entry, str) and ":" in entry:  # params/data.yaml:fetch
            file, _, keys = entry.partition(":")
            for key in keys.split(","):
                out.setdefault(key.split(".")[0].strip(), project / file)
    for stage in (doc.get("stages") or {}).values():
        for item in (stage or {}).get("params") or []:
            if isinstance(item, dict):
                for file, keys in item.items():
                    for key in keys or []:
                        out.setdefault(str(key).split(".")[0], project / file)
            else:  # a bare key lives in params.yaml
                out.setdefault(str(item).split(".")[0], project / "params.yaml")
    return out


def stage_names(project: Path) -> list[str]:
    """The pipeline's stages in dvc.yaml order (which lists them in run order)."""
    return list((read_dvc_yaml(project).get("stages") or {}).keys())


def stage_option(project: Path, stage: str, option: str) -> str | None:
    """The value of ``option`` in a dvc.yaml stage's command (e.g. the train stage's --run-dir)."""
    spec = (read_dvc_yaml(project).get("stages") or {}).get(stage) or {}
    m = re.search(rf"{re.escape(option)}[ =](\S+)", str(spec.get("cmd", "")))
    return m.group(1) if m else None


def file_for(project: Path, section: str, files: dict[str, Path]) -> Path:
    if section in files:
        return files[section]
    fallback = project / "params" / f"{section}.yaml"
    if fallback.is_file():
        return fallback
    raise ConfigError(
        f"overrides: unknown section {section!r}; the pipeline reads "
        f"{', '.join(sorted(files))} (or name the file: params/FILE.yaml:{section}.key=value)"
    )


# ----------------------------------------------------------------------------- validation


def _train_loader(path: Path) -> Any:
    from gan_models.config import load_params
    from gan_models.training.params import TrainParams

    return load_params(path, TrainParams)


class FetchSection(BaseModel):
    """params/data.yaml ``fetch``: what dvc.yaml's fetch stage passes to ``ganops data fetch``."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="data source, see `ganops data sources`")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="dataset name")


def _fetch_loader(path: Path) -> Any:
    from gan_models.config import validate_model
    from gan_models.data.sources import get_source

    data = (yaml.safe_load(path.read_text()) or {}).get("fetch") or {}
    section = validate_model(FetchSection, data, f"{path} [fetch]")
    get_source(section.source)  # an unknown source raises a DataError naming the choices
    return section


# One loader per section with its own params model, imported only when a file holding that
# section is checked (the models pull in torch and friends).


def _validate_loader(path: Path) -> Any:
    from gan_models.config import load_section
    from gan_models.data.gx_suite import ValidateParams

    return load_section(path, "validate", ValidateParams)


def _preprocess_loader(path: Path) -> Any:
    from gan_models.config import load_section
    from gan_models.data.preprocess import PreprocessParams

    return load_section(path, "preprocess", PreprocessParams)


def _features_loader(path: Path) -> Any:
    from gan_models.config import load_section
    from gan_models.metrics.config import FeaturesParams

    return load_section(path, "features", FeaturesParams)


def _evaluate_loader(path: Path) -> Any:
    from gan_models.config import load_section
    from gan_models.metrics.config import EvaluateParams

    return load_section(path, "evaluate", EvaluateParams)


def _tune_loader(path: Path) -> Any:
    from gan_models.config import load_section
    from gan_models.tuning.config import TuneParams

    return load_section(path, "tune", TuneParams)


def _register_loader(path: Path) -> Any:
    from gan_models.config import load_section
    from gan_models.tracking.gate import RegisterParams

    return load_section(path, "register", RegisterParams)


# Every section some params file holds for the pipeline -> the typed loader its command uses.
SECTION_LOADERS: dict[str, Callable[[Path], Any]] = {
    **dict.fromkeys((*TRAIN_SECTIONS, "name"), _train_loader),
    "fetch": _fetch_loader,
    "validate": _validate_loader,
    "preprocess": _preprocess_loader,
    "features": _features_loader,
    "evaluate": _evaluate_loader,
    "tune": _tune_loader,
    "register": _register_loader,
}
KNOWN_SECTIONS = frozenset(SECTION_LOADERS)


def loaders(sections: Iterable[str]) -> dict[str, Callable[[Path], Any]]:
    """The typed loader of each section (the one its command uses); unknown sections: none."""
    return {s: SECTION_LOADERS[s] for s in sections if s in SECTION_LOADERS}


# ----------------------------------------------------------------------------- editing


def _plain_to_yaml(value: Any) -> Any:
    """Plain data -> ruamel nodes; short scalar lists stay in flow style (``[0.5, 0.999]``)."""
    if isinstance(value, dict):
        m = CommentedMap()
        for k, v in value.items():
            m[k] = _plain_to_yaml(v)
        return m
    if isinstance(value, (list, tuple)):
        seq = CommentedSeq(_plain_to_yaml(v) for v in value)
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            seq.fa.set_flow_style()
        return seq
    return value


def _set(doc: CommentedMap, keys: list[str], value: Any, where: str) -> bool:
    """Set ``doc[k1][k2]... = value``; True if it changed anything."""
    node = doc
    for k in keys[:-1]:
        if k not in node or node[k] is None:
            node[k] = CommentedMap()
        node = node[k]
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {'.'.join(keys)}: {k!r} is not a section")
    if keys[-1] in node and node[keys[-1]] == value:
        return False
    node[keys[-1]] = _plain_to_yaml(value)
    return True


class ParamsEdit:
    """Pending changes to the params files of one project; ``commit`` validates and writes."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.files = section_files(project)
        self.docs: dict[Path, CommentedMap] = {}
        self.changed: dict[Path, list[str]] = {}

    def doc(self, path: Path) -> CommentedMap:
        if path not in self.docs:
            if not path.is_file():
                raise ConfigError(f"{path}: params file not found")
            self.docs[path] = _yaml().load(path.read_text()) or CommentedMap()
        return self.docs[path]

    def set(self, dotted: str, value: Any, file: Path | None = None) -> None:
        keys = dotted.split(".")
        path = file or file_for(self.project, keys[0], self.files)
        if _set(self.doc(path), keys, value, str(path.relative_to(self.project))):
            self.changed.setdefault(path, []).append(dotted)

    def replace_train_sections(self, preset: Path) -> None:
        """The preset's data/model/loss/train (``extends`` resolved) replace the training file's.

        Only keys the preset (or a file it extends) sets are written, not every default; the
        pipeline keys (FID during training) are kept unless the preset sets them.
        """
        from gan_models.config import load_params
        from gan_models.training.params import TrainParams

        if not preset.is_file():
            raise ConfigError(f"preset: {preset} not found (expected a params file)")
        given = load_params(preset, TrainParams).model_dump(mode="json", exclude_unset=True)
        path = file_for(self.project, "train", self.files)
        doc = self.doc(path)
        kept = {k: doc[s][k] for s, k in PIPELINE_KEYS if k in (doc.get(s) or {})}
        for section in TRAIN_SECTIONS:
            new = dict(given.get(section) or {})
            if section == "train":
                new = {**new, **{k: v for k, v in kept.items() if k not in new}}
            old = doc.get(section)
            plain_old = yaml.safe_load(_dump(old)) if old is not None else None
            if plain_old != new:
                doc[section] = _plain_to_yaml(new)
                self.changed.setdefault(path, []).append(section)

    def commit(self) -> dict[str, list[str]]:
        """Validate every changed file with its command's loader, then write them atomically.

        Nothing is written unless every file validates. Returns {file: [changed keys]}.
        """
        with contextlib.ExitStack() as stack:  # on any error every temporary file is removed
            for path, keys in self.changed.items():
                tmp = stack.enter_context(atomic_path(path))
                tmp.write_text(_dump(self.docs[path]))
                sections = {k.split(".")[0] for k in keys}
                unknown = sorted(sections - set(loaders(sections)))
                if unknown:  # nothing checks such a key: refuse it rather than write it blindly
                    rel = str(path.relative_to(self.project))
                    raise ConfigError(f"{rel}: unknown section {unknown[0]!r}")
                for load in {id(f): f for f in loaders(sections).values()}.values():
                    try:
                        load(tmp)
                    except ConfigError as e:  # name the real file, not the temporary one
                        rel = str(path.relative_to(self.project))
                        raise type(e)(str(e).replace(str(tmp), rel)) from None
        return {str(p.relative_to(self.project)): keys for p, keys in self.changed.items()}


def _dump(node: Any) -> str:
    buf = io.StringIO()
    _yaml().dump(node, buf)
    return buf.getvalue()


PRESETS_DIR = "params"  # where a preset name points: params/NAME.yaml


def apply_pipeline_params(project: str | Path, params: PipelineParams) -> dict[str, list[str]]:
    """Write a pipeline run's parameters into the project's params files.

    Order: ``source``/``dataset`` (fetch section; the training data path follows the dataset;
    a source alone names the dataset after itself), ``preset``, ``family``, the training knobs
    (``steps``, ``batch_size``, ``lr``, ``seed``), ``tune`` (tune.enabled), then
    ``overrides``. Every override is checked against the params model of its section: an
    unknown section or key is refused, naming it, and nothing is written. Returns {file:
    [changed keys]}; an empty dict when the files already say all of it.
    """
    project = Path(project).resolve()
    edit = ParamsEdit(project)
    dataset = params.dataset
    if dataset is None and params.source is not None:
        dataset = params.source
    if params.source is not None:
        edit.set("fetch.source", params.source)
    if dataset is not None:
        edit.set("fetch.name", dataset)
    if params.preset is not None:
        edit.replace_train_sections(project / PRESETS_DIR / f"{params.preset}.yaml")
    if dataset is not None or params.preset is not None:
        name = dataset
        if name is None:
            fetch_file = file_for(project, "fetch", edit.files)
            name = str((edit.doc(fetch_file).get("fetch") or {}).get("name"))
        edit.set("data.path", f"data/processed/{name}")
    if params.family is not None:
        current = (edit.doc(file_for(project, "model", edit.files)).get("model") or {}).get(
            "family"
        )
        if params.preset is not None and current != params.family:
            raise ConfigError(
                f"family: {params.family!r} contradicts the preset {params.preset} "
                f"(model.family {current!r}); give one or make them agree"
            )
        edit.set("model.family", params.family)
    for key, value in params.knobs().items():
        edit.set(key, value)
    if params.tune is not None:
        edit.set("tune.enabled", params.tune)
    for item in params.overrides:
        m = OVERRIDE_RE.match(item)
        assert m is not None  # PipelineParams checked the syntax
        [(keys, value)] = parse_overrides([f"{m['key']}={m['value']}"])
        file = project / m["file"] if m["file"] else None
        if file is not None and not file.is_file():
            raise ConfigError(f"overrides: {item!r}: {m['file']} not found")
        if keys[0] not in KNOWN_SECTIONS:
            known = ", ".join(sorted(KNOWN_SECTIONS))
            raise ConfigError(f"overrides: {item!r}: unknown section {keys[0]!r}; known: {known}")
        edit.set(".".join(keys), value, file)
    return edit.commit()

"""The training params: what ``ganops train PARAMS`` reads, checked against the chosen family.

``TrainParams`` holds the trainer's sections (``data``, ``train``) and the two sections the
families share (``model``, ``loss``). A shared section holds the keys several families read
(:mod:`gan_models.config`) plus the chosen family's own keys, validated by that family's options
model (``Family.options``) with its defaults filled in, so ``params.loss.cycle_weight`` reads
like any other key and the resolved config (``--dry-run``, a run's config.yaml, the params hash)
shows every value the run used. Refused, naming the key and the family:

- a key of another family's options (``loss.cycle_weight`` in a DCGAN file), naming its owner;
- a key no family declares (a typo), with the closest key;
- a shared key the family does not read, set away from its default (``Family.reads``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, ValidationError, model_validator

from gan_models.config import (
    SHARED_SECTIONS,
    DataConfig,
    LossConfig,
    ModelConfig,
    Section,
    TrainConfig,
    TunedFrom,
    params_from_data,
    read_params_yaml,
)
from gan_models.errors import ConfigError

if TYPE_CHECKING:
    from gan_models.families import Family


class TrainParams(Section):
    """A training params file: what ``ganops train PARAMS`` reads."""

    named_after_file: ClassVar[bool] = True  # ``name`` defaults to the file's stem

    name: str | None = Field(None, description="experiment name; default: the file's stem")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tuned: TunedFrom | None = Field(
        None, description="set in params/best.yaml: the tuning trial these params come from"
    )

    @model_validator(mode="after")
    def _family_owns_its_keys(self) -> TrainParams:
        # the zoo imports torch; loaded on first validation, so a command's --help stays quick
        from gan_models.families import FAMILIES

        family = FAMILIES.get(self.model.family)
        if family is None:
            raise ValueError(
                f"model.family: unknown family {self.model.family!r}; "
                f"expected one of {sorted(FAMILIES)}"
            )
        for section in SHARED_SECTIONS:
            # a fresh section object: the defaults' instances are never changed in place
            values = getattr(self, section).model_copy(deep=True)
            values.__pydantic_extra__ = _family_options(family, section, values)
            object.__setattr__(self, section, values)
        for key, value, default in family.ignored_keys(self):
            raise ValueError(
                f"{key}: the {family.name} family does not read this key, so {value!r} would be "
                f"ignored; remove it (default {default!r}) or choose a family that reads it"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """A short hash of the resolved config (for lineage and run tags)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _family_options(family: Family, section: str, values: Any) -> dict[str, Any]:
    """The family's own keys of ``section``, validated by its options model, defaults filled."""
    from gan_models.families import option_owners

    given = dict(values.__pydantic_extra__ or {})
    model = family.options.get(section)
    own = model.model_fields if model is not None else {}
    for key, value in given.items():
        if key in own:
            continue
        owners = option_owners(section, key)
        if owners:
            raise ValueError(
                f"{section}.{key}: the {family.name} family does not read this key (an option "
                f"of the {' and '.join(owners)} family), so {value!r} would be ignored; remove "
                "it or choose a family that reads it"
            )
        known = [*type(values).model_fields, *own]
        close = difflib.get_close_matches(key, known, 1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"{section}.{key}: unknown key{hint}; the {family.name} family's {section} keys are "
            f"{sorted(known)}"
        )
    if model is None:
        return {}
    try:
        return model.model_validate(given).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{section}.{loc}: {err['msg']} (got {err.get('input')!r})") from None


def load_run_config(path: str | Path) -> TrainParams:
    """A run folder's config.yaml, the resolved params the trainer wrote.

    Folders written before families owned their options hold every family's keys at their
    defaults (the check then refused any other value of a key the family did not read), and
    null for "the family's default" (``res_blocks``, ``adv_weight``); those are dropped, so older
    runs and the models registered from them still load, with the same values.
    """
    path = Path(path)
    data = read_params_yaml(path)
    from gan_models.families import FAMILIES

    family = FAMILIES.get(str((data.get("model") or {}).get("family")))
    if family is not None:
        for section in SHARED_SECTIONS:
            values = data.get(section)
            if isinstance(values, dict):
                shared = TrainParams.model_fields[section].annotation.model_fields
                own = getattr(family.options.get(section), "model_fields", {})
                data[section] = {
                    k: v
                    for k, v in values.items()
                    if k in shared or (k in own and (v is not None or own[k].default is None))
                }  # an old null meant "the family's default", which its options model holds
    return params_from_data(path, data, TrainParams)


def find_presets(params_dir: str | Path = "params") -> dict[str, list[tuple[str, TrainParams]]]:
    """Training presets by family: files ``FAMILY-*.yaml`` in ``params_dir`` whose
    ``model.family`` is FAMILY (so ``train.yaml`` and ``best.yaml`` are not presets)."""
    if not Path(params_dir).is_dir():
        raise ConfigError(f"{params_dir}: no such folder (expected the folder of the params files)")
    out: dict[str, list[tuple[str, TrainParams]]] = {}
    for path in sorted(Path(params_dir).glob("*.yaml")):
        data = read_params_yaml(path)
        family = (data.get("model") or {}).get("family")
        if isinstance(family, str) and path.stem.startswith(f"{family}-"):
            out.setdefault(family, []).append(
                (str(path), params_from_data(path, data, TrainParams))
            )
    return out

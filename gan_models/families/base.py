"""The family interface: what a GAN family tells the trainer, and nothing the trainer owns.

A family builds named networks and says which optimizer steps which of them, and lists the loss
*phases* of one training step (StyleGAN2-ADA's Gmain/Dmain/Dreg). The trainer owns the loop:
batches, backward, optimizer steps, AMP, EMA, checkpoints and logging. That split fits every
family of the zoo:

- one G and one D (Vanilla, DCGAN, WGAN, WGAN-GP): phases D (x n_critic), optional Dreg, G;
- conditional (cGAN): the batch carries ``label`` and the generator takes labels;
- several networks (CycleGAN): nets ``G_AB, G_BA, D_A, D_B`` with optimizer groups
  ``{"G": [G_AB, G_BA], "D": [D_A, D_B]}`` and ``batch_kind="unpaired"`` (batches ``a``, ``b``);
- paired data (SRGAN): ``batch_kind="paired"`` (batches ``a`` = low-res, ``b`` = high-res) and a
  G phase whose loss adds the content term;
- image-to-image generators (CycleGAN, SRGAN): ``sample_inputs`` draws the real inputs that
  sample grids and evaluation feed to ``generate`` in place of latents;
- StyleGAN: G holds mapping + synthesis; lazy regularisers are phases with ``every=16``.

A family owns its knobs: its own keys of the ``model`` and ``loss`` sections are declared by its
options models (``options``: pydantic models with types, bounds and descriptions, shown by
``ganops families``), so params files keep their shape (``model: {res_blocks: 6}``) and a key of
another family is refused naming both. The keys the zoo shares (``model.width``, ``loss.type``)
stay in :mod:`gan_models.config`; each family lists those its code reads (``reads``), and any
other shared key set away from its default is refused when the params load
(:meth:`Family.ignored_keys`), so a user is never given a run that silently ignored an option.
``data`` and ``train`` belong to the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from gan_models.config import SHARED_SECTIONS
from gan_models.errors import ConfigError
from gan_models.utils.batch_shard import draw

if TYPE_CHECKING:
    from gan_models.data.format import ImageSet
    from gan_models.metrics.config import EvaluateParams
    from gan_models.metrics.extractor import FeatureExtractor
    from gan_models.training.params import TrainParams

Nets = dict[str, nn.Module]
Batch = dict[str, Tensor]
Losses = dict[str, Tensor]


@dataclass(frozen=True)
class DataSpec:
    """What the networks need to know about the data."""

    channels: int
    image_size: int
    num_classes: int | None = None
    kind: str = "images"
    # For paired data: the size of the ``a`` (input) images, e.g. low-res for super-resolution.
    input_size: int | None = None
    input_channels: int | None = None


@dataclass
class StepContext:
    """What a phase's loss function may use besides the networks and the batch."""

    step: int  # generator steps done before this one
    params: TrainParams
    spec: DataSpec
    device: torch.device
    batch_size: int  # this rank's share of ``train.batch_size`` (all of it on one process)

    def latents(self, n: int, dim: int | None = None) -> Tensor:
        """Standard normal latents (n, dim) drawn from the trainer's (checkpointed) RNG; in a
        data-parallel run, this rank's rows of the global batch's draw (``batch_shard``)."""
        d = dim or self.params.model.latent_dim
        return draw(lambda m: torch.randn(m, d, device=self.device), n)

    def labels(self, n: int) -> Tensor | None:
        """Uniform class labels (n,) for conditional families, else None."""
        if not self.spec.num_classes:
            return None
        k = self.spec.num_classes
        return draw(lambda m: torch.randint(0, k, (m,), device=self.device), n)


LossFn = Callable[[Nets, Batch | None, StepContext], Losses]
# sample_inputs(params, spec, data, n, seed) -> n real inputs (n, C, h, w) in [-1, 1]
SampleInputsFn = Callable[["TrainParams", DataSpec, "ImageSet", int, int], Tensor]
# styled(nets, z, psi, z2, crossover) -> images (N, C, H, W) in [-1, 1]
StyledFn = Callable[[Nets, Tensor, float, Tensor | None, int | None], Tensor]


@dataclass
class EvaluationPlan:
    """How evaluation scores a family whose generator does not draw from latents alone.

    ``real_train`` is the reference split the generated images are scored against and
    ``real_test`` the held-out one (FID floor, memorisation baseline); ``inputs`` is where
    ``generate`` draws its inputs (None: latents); at most ``max_samples`` images are generated
    (each held-out input once); ``metrics`` holds the family's own results by registered metric
    name (``gan_models.metrics.registry``: ``translation``, ``super_resolution``).
    """

    real_train: ImageSet
    real_test: ImageSet
    inputs: ImageSet | None = None
    max_samples: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


# evaluation(params, spec, nets, extractor, evaluate) -> the plan of ``ganops evaluate``
EvaluationFn = Callable[
    ["TrainParams", DataSpec, Nets, "FeatureExtractor", "EvaluateParams"], EvaluationPlan
]


class FamilyOptions(BaseModel):
    """A family's own keys of one shared section (``model`` or ``loss``): subclass it with
    pydantic fields (default, bounds, description) and give it in ``Family.options``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Phase:
    """One optimizer step of a training step.

    ``loss`` returns a dict whose ``"loss"`` entry is backpropagated; other entries are logged.
    ``repeats`` runs the phase several times per step (n_critic), each on a fresh batch;
    ``every`` runs it only on steps divisible by it (lazy regularisation), and the family should
    scale the loss by ``every`` to keep the effective weight.
    """

    name: str
    optimizer: str
    loss: LossFn
    repeats: int = 1
    every: int = 1
    needs_batch: bool = True
    after: Callable[[Nets], None] | None = None  # e.g. WGAN's weight clipping


@dataclass
class Family:
    """A GAN family: its networks, its phases and how it generates samples."""

    name: str
    description: str
    paper: str
    build: Callable[[TrainParams, DataSpec], Nets]
    phases: Callable[[TrainParams, DataSpec], list[Phase]]
    # generate(nets, z, labels) -> images (N, C, H, W) in [-1, 1]
    generate: Callable[[Nets, Tensor, Tensor | None], Tensor]
    optim_groups: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"G": ("G",), "D": ("D",)}
    )
    ema_nets: tuple[str, ...] = ("G",)
    batch_kind: str = "images"
    conditional: bool = False
    default_loss: str = "nonsaturating"
    default_n_critic: int = 1
    allowed_losses: tuple[str, ...] = ("nonsaturating", "hinge", "wasserstein", "lsgan")
    check: Callable[[TrainParams, DataSpec], None] | None = None
    # Families whose generator maps an image to an image (translation, super-resolution) draw
    # seeded real inputs from a dataset here; ``generate`` then takes them (N, C, h, w) in place
    # of latents, and sample grids show each input next to its output. None: latents only.
    sample_inputs: SampleInputsFn | None = None
    # Style-based generators (StyleGAN): styled(nets, z, psi, z2, crossover) -> images, with
    # truncation towards the mean style and style mixing from z2's latents at style layers >=
    # crossover (None: half of them). Their G has ``mapping`` (z -> w, ``w_avg``) and
    # ``synthesis(ws, noise)``, which the explorer exports as two graphs. None: plain latents.
    styled: StyledFn | None = None
    # How ``ganops evaluate`` scores the family when it is not the latent default (train/test
    # splits of the processed dataset, latents, the registered metrics only): image-to-image
    # families give their reference splits, held-out inputs and own metrics (EvaluationPlan).
    evaluation: EvaluationFn | None = None
    # The family's own keys: {"model": OptionsModel, "loss": OptionsModel}. They appear in the
    # params under those sections and are validated by these models (see ``FamilyOptions``).
    options: dict[str, type[FamilyOptions]] = field(default_factory=dict)
    # The keys of the shared ``model`` and ``loss`` sections this family's code reads
    # ("model.width", "loss.n_critic"; model.family is implied). The keys of ``options`` are
    # added to it: ``reads`` is every key of those sections the family reads.
    reads: frozenset[str] = frozenset()
    # Optimizer groups stepped with ``train.lr_d`` (when set) instead of ``train.lr``.
    critic_groups: tuple[str, ...] = ("D",)

    def __post_init__(self) -> None:
        unknown = set(self.options) - set(SHARED_SECTIONS)
        if unknown:
            raise ValueError(f"{self.name}: options for unknown sections {sorted(unknown)}")
        self.reads = self.reads | {
            f"{s}.{k}" for s, m in self.options.items() for k in m.model_fields
        }
        for phase_group in self.critic_groups:
            if phase_group not in self.optim_groups:
                raise ValueError(f"{self.name}: critic group {phase_group!r} is no optim group")

    def ignored_keys(self, params: TrainParams) -> list[tuple[str, Any, Any]]:
        """(key, value, default) of each shared key set away from its default that this family
        does not read: a value that would silently change nothing."""
        out = []
        for section in SHARED_SECTIONS:
            values = getattr(params, section)
            for name, spec in type(values).model_fields.items():  # the shared keys only
                key = f"{section}.{name}"
                if key == "model.family" or key in self.reads:
                    continue
                value, default = getattr(values, name), spec.get_default(call_default_factory=True)
                if value != default:
                    out.append((key, value, default))
        return out

    @property
    def takes_inputs(self) -> bool:
        """Whether the generator's input is an image (see ``sample_inputs``)."""
        return self.sample_inputs is not None

    def loss_type(self, params: TrainParams) -> str:
        """The objective: ``loss.type`` or the family's default, refused if not allowed."""
        kind = params.loss.type or self.default_loss
        if kind not in self.allowed_losses:
            raise ConfigError(
                f"loss.type: {self.name} supports {list(self.allowed_losses)}, got {kind!r}"
            )
        return kind

    def n_critic(self, params: TrainParams) -> int:
        return params.loss.n_critic or self.default_n_critic

"""Objectives and penalties against their closed forms."""

import math

import pytest
import torch

from gan_models.losses import d_loss, g_loss, gradient_penalty, r1_penalty


def test_nonsaturating_at_zero_logits_is_two_log_two():
    z = torch.zeros(5)
    assert d_loss("nonsaturating", z, z).item() == pytest.approx(2 * math.log(2))
    assert g_loss("nonsaturating", z).item() == pytest.approx(math.log(2))


@pytest.mark.parametrize(
    "kind, real, fake, want_d, want_g",
    [
        ("hinge", 2.0, -2.0, 0.0, 2.0),  # both margins met
        ("hinge", 0.0, 0.0, 2.0, 0.0),
        ("wasserstein", 3.0, 1.0, -2.0, -1.0),
        ("lsgan", 1.0, 0.0, 0.0, 0.5),
    ],
)
def test_objectives_closed_form(kind, real, fake, want_d, want_g):
    r, f = torch.full((4,), real), torch.full((4,), fake)
    assert d_loss(kind, r, f).item() == pytest.approx(want_d)
    assert g_loss(kind, f).item() == pytest.approx(want_g)


def test_gradient_penalty_of_linear_critic():
    # critic(x) = <w, x>: the gradient is w everywhere, so GP = (||w|| - 1)^2.
    w = torch.randn(1, 3, 4, 4)

    def critic(x):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    want = (w.norm() - 1) ** 2
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(want.item(), rel=1e-5)


def test_r1_of_linear_critic_is_squared_weight_norm():
    w = torch.randn(1, 2, 3, 3)

    def critic(x):
        return (x * w).flatten(1).sum(1)

    assert r1_penalty(critic, torch.randn(5, 2, 3, 3)).item() == pytest.approx(
        w.pow(2).sum().item(), rel=1e-5
    )


def test_unknown_loss_type_raises():
    with pytest.raises(ValueError, match="unknown loss type"):
        d_loss("bogus", torch.zeros(1), torch.zeros(1))

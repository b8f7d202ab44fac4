"""The worked example's own tests: the checks cloakbench's tests make of its built-ins (docs/EXTENDING.md).

    pip install -e examples/plugin && python -m pytest examples/plugin/tests -q
"""

from __future__ import annotations

import pytest
import torch

from cloakbench.images import perturbation_norms, quantize
from cloakbench.models import load_model
from cloakbench.protect.engine import finalize
from cloakbench_example.blur_cloak import BlurCloak
from cloakbench_example.median import Median
from cloakbench_example.sharpness import Sharpness


def images(n: int = 2, side: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` random images ``n x 3 x side x side`` on the 8-bit grid, in [0, 1]."""
    return quantize(torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed)))


def test_protection_keeps_its_budget_beats_random_noise_and_repeats():
    x, model = images(), load_model("mini")  # the shipped mini stack: a trained model, no download
    prot = BlurCloak(steps=5, alpha=2 / 255)
    adv = prot(x, model, seed=0)
    linf = perturbation_norms(x, adv).linf_255  # in 8-bit levels, as the saved PNG will measure
    assert 1 <= linf.max() <= 8 and prot.stats["updates"] == 5
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    noise = finalize(x + (2 * u - 1) * prot.eps, x, prot.eps)  # uniform noise of the same budget
    assert prot.evaluate(adv, x, model) > prot.evaluate(noise, x, model)
    assert torch.equal(adv, BlurCloak(steps=5, alpha=2 / 255)(x, model, seed=0))  # same seed, same images
    with pytest.raises(TypeError, match="unknown option"):
        BlurCloak(sigmaa=1.0)
    with pytest.raises(ValueError, match="sigma"):
        BlurCloak(sigma=0)


def test_purifier_removes_impulses_and_is_deterministic():
    x = torch.full((1, 3, 16, 16), 0.5)
    dirty = x.clone()
    dirty[..., 4, 4], dirty[..., 9, 12] = 1.0, 0.0  # two isolated impulses
    out = Median()(dirty)
    assert out.shape == x.shape and torch.equal(out, x)
    y = images(side=16)
    assert torch.equal(Median(seed=3)(y), Median(seed=3)(y)) and not torch.equal(Median()(y), y)
    with pytest.raises(ValueError, match="odd"):
        Median(size=2)(y)


def test_metric_hand_value_and_direction():
    dot = torch.zeros(1, 3, 5, 5)
    dot[..., 2, 2] = 1.0  # one white pixel: Laplacian -1020 at it, +255 at its 4 neighbours, 0 at the 4 corners
    r = Sharpness()(dot)
    assert r.value == pytest.approx((1020**2 + 4 * 255**2) / 9) and r.n == 1 and r.higher_better is True
    x = images(side=32)
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    assert Sharpness()(blurred).value < Sharpness()(x).value
    assert Sharpness()(torch.full((2, 3, 8, 8), 0.3)).value == pytest.approx(0.0, abs=1e-6)

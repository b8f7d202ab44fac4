"""Behavioural tests on the shipped mini stack: what the paper's methods claim, measured.

1. Shortcut learning: a fixed pattern added to the instance photos is reproduced by the personalized
   model when prompted with the identifier (and not by a model trained on the clean photos).
2. CDL: with the noise words in the training prompts, "without <noise>" samples carry less of it.
3. CodeSR-mini removes most of a protection's perturbation while keeping the identity.

Held-out subjects only (never seen by any mini model). Each DreamBooth run is short (CPU).

Status (recorded, not hidden): with the shipped weights (v2) these claims do NOT hold yet. Measured
on v2 after the DDIM fix of ``make_scheduler`` (120 DreamBooth steps, lr 2e-4, 8 samples): the
pattern's energy is 0.0649 in the instances, 0.0155 in samples after patterned training against
0.0030 after clean training (reproduced, but 24 % of it where the test asks 25 %); CDL's "without"
samples carry 0.0163 (no drop); CodeSR-mini keeps 12 % of AdvDM's high-pass perturbation (removal
holds) but the identity cosine clean vs purified is 0.54 where a match needs 0.80. (Earlier figures
were measured on DDIM samples that clipped the predicted latents to [-1, 1].) A v-prediction UNet
(branch ``mini-v3-vpred``) reached 26 % on the shortcut test, but its demo lost the protection gap.
The tests are marked ``xfail(strict=True)``: they run with ``--runslow`` and turn the suite red the day
they pass, so the marker must then be removed. See issue #8's notes for what is left.
"""

import pytest
import torch
import torch.nn.functional as F

from cloakbench.mini import world
from cloakbench.mini.stack import load_stack

pytestmark = [pytest.mark.slow, pytest.mark.xfail(strict=True, reason="mini weights v2 too weak: see module docstring")]

SUBJECT = 135  # held out: "a teal square toy with white stripes"
AMP = 16 / 255
STEPS = 120


@pytest.fixture(scope="module")
def stack():
    return load_stack()


def pattern() -> torch.Tensor:
    """A fixed sign pattern in 4 px cells (the stand-in for a protection's noise; two latent pixels of
    the factor-2 mini VAE per cell), 3 x 32 x 32 in {-1, 1}."""
    g = torch.Generator().manual_seed(1234)
    return F.interpolate(torch.sign(torch.randn(1, 3, 8, 8, generator=g)), scale_factor=4, mode="nearest")[0]


def highpass(x: torch.Tensor) -> torch.Tensor:
    return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)


def pattern_energy(images: torch.Tensor) -> float:
    """Mean projection coefficient of the images (each channel's mean removed) on the pattern, in pixel units."""
    p = pattern()
    x = images - images.mean((2, 3), keepdim=True)
    return float((x * p).sum((1, 2, 3)).mean() / (p * p).sum())


def personalize(tmp_path, name: str, images: torch.Tensor, *, cdl: bool, prompt: str) -> torch.Tensor:
    from cloakbench.models import load_model
    from cloakbench.personalize import CDLPolicy, DreamBoothTrainer, TrainConfig, prepare_class_images
    from cloakbench.sample import SampleConfig, generate

    model = load_model("mini")
    classes = prepare_class_images(model, 4, "a photo of toy", tmp_path / "classes", steps=20, resolution=32)
    cfg = TrainConfig(instance_prompt="a photo of sks toy", class_prompt="a photo of toy", steps=STEPS, lr=2e-4,
                      resolution=32, cdl=CDLPolicy(enabled=cdl))
    DreamBoothTrainer(model, cfg, tmp_path / name).fit(images, classes)
    return generate(model, [prompt], 8, SampleConfig(steps=25, guidance=5.0, scheduler="ddim"), seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mini-db")
    clean = world.photos(SUBJECT, 4, seed=0)
    marked = (clean + AMP * pattern()).clamp(0, 1)
    marked = (marked * 255).round() / 255
    plain = "a photo of sks toy"
    return {
        "clean": personalize(tmp, "clean", clean, cdl=False, prompt=plain),
        "marked": personalize(tmp, "marked", marked, cdl=False, prompt=plain),
        "cdl": personalize(tmp, "cdl", marked, cdl=True, prompt=plain + ", without bhj noisy pattern"),
        "train_energy": pattern_energy(marked),
    }


def test_shortcut_pattern_is_reproduced(trained):
    e_clean, e_marked = pattern_energy(trained["clean"]), pattern_energy(trained["marked"])
    print(f"pattern energy: instances {trained['train_energy']:.4f}, samples after clean training {e_clean:.4f}, "
          f"after patterned training {e_marked:.4f}")
    assert e_marked > 0.25 * trained["train_energy"]
    assert e_marked > e_clean + 0.15 * trained["train_energy"]


def test_cdl_reduces_pattern_in_without_noise_samples(trained):
    e_marked, e_cdl = pattern_energy(trained["marked"]), pattern_energy(trained["cdl"])
    print(f"pattern energy: DreamBooth {e_marked:.4f}, CDL 'without bhj noisy pattern' {e_cdl:.4f}")
    assert e_cdl < 0.8 * e_marked


def test_codesr_mini_removes_perturbation_keeps_identity(stack):
    from cloakbench.models import load_model
    from cloakbench.protect import create_protection
    from cloakbench.purify import create_purifier

    clean = world.photos(SUBJECT, 4, seed=3)
    adv = create_protection("advdm", eps=16 / 255, steps=20)(clean, load_model("mini"), seed=0)
    pur = create_purifier("codesr-mini")(adv)
    delta, left = (adv - clean).flatten(1), (pur - clean).flatten(1)
    kept = float(F.cosine_similarity(highpass(pur - clean).flatten(1), highpass(adv - clean).flatten(1)).mean()
                 * highpass(pur - clean).flatten(1).norm(dim=1).mean() / highpass(adv - clean).flatten(1).norm(dim=1).mean())
    with torch.no_grad():
        e_clean, _ = stack.identity(clean)
        e_pur, _ = stack.identity(pur)
    cos = float((e_clean * e_pur).sum(1).mean())
    tau = stack.manifest["validation"]["identity_threshold"]
    print(f"perturbation kept {kept:.3f} (|delta| {float(delta.norm(dim=1).mean()):.3f}, "
          f"|left| {float(left.norm(dim=1).mean()):.3f}); identity cosine clean vs purified {cos:.3f} (match at >= {1 - tau:.3f})")
    assert kept < 0.5
    assert 1 - cos <= tau

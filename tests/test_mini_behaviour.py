"""Behavioural tests on the shipped mini stack: what the paper's methods claim, measured.

1. Shortcut learning: a fixed pattern added to the instance photos is reproduced by the personalized
   model when prompted with the identifier (and not by a model trained on the clean photos).
2. CDL: with the noise words in the training prompts the identifier carries less of the pattern, the
   noise words more, and the paper's sampling suffix ", without <noise>" removes it (the issue's claim).
3. CodeSR-mini removes most of a protection's perturbation while keeping the identity.

Held-out subject only (never seen by any mini model). Each DreamBooth run is short (CPU, ~30 s).

Margins behind the thresholds, with the v5 weights (120 DreamBooth steps at lr 2e-4, 8 DDIM
samples at guidance 5): instance pattern energy 0.0585; patterned DreamBooth 0.0169 vs clean control
-0.0074 (threshold 3x the control); CodeSR-mini keeps 8.5 % of AdvDM's high-pass perturbation
(threshold 50 %) with identity cosine 0.898 (a match needs 0.558).

CDL's two tests were strict expected failures on v5 (UNet 6000 steps: identifier alone 0.0163 and
"..., without bhj noisy pattern" 0.0194 vs DreamBooth's 0.0169; threshold 0.8x). On v5.1 (UNet 7500 steps,
shipped 2026-12-01) both pass again: DreamBooth 0.0151, CDL identifier alone 0.0047 (-69 %), CDL with
"bhj noisy pattern" 0.0054 (above the identifier alone, a thin margin), "..., without bhj noisy pattern"
0.0053 (-65 %). On v5.2 (the UNet of a from-scratch run, shipped 2026-12-07) both pass with less room:
DreamBooth 0.0140, CDL identifier alone 0.0102 (-27 %), with "bhj noisy pattern" 0.0109, "..., without bhj
noisy pattern" 0.0102; clean control -0.0054; CodeSR-mini keeps 8.9 % with identity cosine 0.881.
With v4 they passed (0.0200 and 0.0198 vs 0.0323). The mechanism holds on a fixed
pattern; the evaluation grid (benchmarks/README.md, "Mini demo") measures what it does to identity.
"""

import pytest
import torch
import torch.nn.functional as F

from cloakbench.models.mini import world
from cloakbench.models.mini.stack import load_stack

pytestmark = pytest.mark.slow  # 120-step DreamBooth runs; CI runs them (--runslow in .ci/run)

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


PLAIN = "a photo of sks toy"
NOISE = "bhj noisy pattern"  # CDL's default noise phrase (docs/PAPER.md §5)


def personalize(tmp_path, name: str, images: torch.Tensor, *, cdl: bool):
    from cloakbench.models import load_model
    from cloakbench.personalize import CDLPolicy, DreamBoothTrainer, TrainConfig
    from cloakbench.sample import prepare_class_images

    model = load_model("mini")
    classes = prepare_class_images(model, 4, "a photo of toy", tmp_path / "classes", steps=20, resolution=32)
    cfg = TrainConfig(instance_prompt=PLAIN, class_prompt="a photo of toy", steps=STEPS, lr=2e-4,
                      resolution=32, cdl=CDLPolicy(enabled=cdl, noise=NOISE),
                      latents="cached")  # measured so; per-step draws (the reference's) weaken the pattern here
    DreamBoothTrainer(model, cfg, tmp_path / name).fit(images, classes)
    return model


def sample(model, prompt: str) -> torch.Tensor:
    from cloakbench.sample import SampleConfig, generate

    return generate(model, [prompt], 8, SampleConfig(steps=25, guidance=5.0, scheduler="ddim"), seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mini-db")
    clean = world.photos(SUBJECT, 4, seed=0)
    marked = (clean + AMP * pattern()).clamp(0, 1)
    marked = (marked * 255).round() / 255
    out = {"clean": sample(personalize(tmp, "clean", clean, cdl=False), PLAIN),
           "marked": sample(personalize(tmp, "marked", marked, cdl=False), PLAIN),
           "train_energy": pattern_energy(marked)}
    cdl = personalize(tmp, "cdl", marked, cdl=True)
    for key, prompt in (("cdl", PLAIN), ("cdl_noise", f"{PLAIN}, {NOISE}"), ("cdl_without", f"{PLAIN}, without {NOISE}")):
        out[key] = sample(cdl, prompt)
    return out


def test_shortcut_pattern_is_reproduced(trained):
    e_clean, e_marked = pattern_energy(trained["clean"]), pattern_energy(trained["marked"])
    print(f"pattern energy: instances {trained['train_energy']:.4f}, samples after clean training {e_clean:.4f}, "
          f"after patterned training {e_marked:.4f}")
    assert e_marked > 3 * e_clean
    assert e_marked > e_clean + 0.15 * trained["train_energy"]


def test_cdl_moves_the_pattern_from_the_identifier_to_the_noise_words(trained):
    e_db, e_id, e_noise = (pattern_energy(trained[k]) for k in ("marked", "cdl", "cdl_noise"))
    print(f"pattern energy of '{PLAIN}' samples: DreamBooth {e_db:.4f}, CDL {e_id:.4f}; CDL with '{NOISE}' {e_noise:.4f}")
    assert e_id < 0.8 * e_db
    assert e_noise > e_id


def test_cdl_without_noise_suffix_reduces_pattern(trained):
    e_db, e_without = pattern_energy(trained["marked"]), pattern_energy(trained["cdl_without"])
    print(f"pattern energy: DreamBooth '{PLAIN}' {e_db:.4f}, CDL '{PLAIN}, without {NOISE}' {e_without:.4f}")
    assert e_without < 0.8 * e_db


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

"""The mini world and the mini training script (plumbing and determinism; fast)."""

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch

from cloakbench.models.mini import world
from cloakbench.minilab.train_data import QUICK
from cloakbench.minilab.train import train_all
from cloakbench.minilab.validate import eer_threshold, roc_auc


def test_world_is_deterministic_and_varied():
    a, b = world.photos(135, 4, seed=0), world.photos(135, 4, seed=0)
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, world.photos(135, 4, seed=1))
    assert not torch.equal(a[0], a[1])  # pose, background and lighting vary between photos
    assert torch.equal(a, (a * 255).round() / 255)  # 8-bit values, like a saved photo
    assert world.N_SUBJECTS == 576 and len(world.held_out_subjects()) == 72
    assert set(world.held_out_subjects()).isdisjoint(world.train_subjects())
    # three pools of held-out subjects, apart: claims, recipe choice, thresholds and model selection (#31)
    pools = [set(world.EVALUATION), set(world.DEVELOPMENT), set(world.calibration_subjects())]
    assert sum(map(len, pools)) == 72 and set.union(*pools) == set(world.held_out_subjects())
    assert not any(a & b for i, a in enumerate(pools) for b in pools[i + 1:])
    assert world.subject(135).caption() == "a photo of a teal square toy with white stripes"
    with pytest.raises(ValueError, match="subject index"):
        world.subject(576)


def test_identity_is_not_one_pixel_statistic():
    """Six subjects that differ only in shape: a nearest-centroid classifier on mean colour is at chance."""
    subs = [s for s in range(world.N_SUBJECTS) if world.subject(s).colour == "teal"
            and world.subject(s).accent == "white" and world.subject(s).pattern == "spots"]
    assert len({world.subject(s).shape for s in subs}) == len(subs) == 6
    x = torch.stack([world.photos(s, 8, 0).mean((2, 3)) for s in subs]).reshape(-1, 3)
    y = torch.arange(6).repeat_interleave(8)
    hits = 0
    for i in range(len(x)):  # leave-one-out
        keep = torch.arange(len(x)) != i
        centroids = torch.stack([x[keep & (y == k)].mean(0) for k in range(6)])
        hits += int((centroids - x[i]).norm(dim=1).argmin() == y[i])
    assert hits / len(x) < 0.4  # chance is 1/6


def test_roc_auc_and_eer_by_hand():
    assert roc_auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert roc_auc(torch.tensor([1.0, 4.0]), torch.tensor([2.0, 3.0])) == 0.5
    assert roc_auc(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 0.5  # ties count 1/2
    assert roc_auc(torch.tensor([2.0, 2.0]), torch.tensor([1.0, 2.0])) == 0.75
    assert eer_threshold(torch.tensor([0.1, 0.2]), torch.tensor([0.8, 0.9])) == pytest.approx(0.2)
    assert eer_threshold(torch.tensor([0.1, 0.5]), torch.tensor([0.3, 0.9])) == pytest.approx(0.3)  # FAR = FRR = 1/2


def test_rank_auc_and_sweep_eer_equal_the_brute_force_forms():
    """The O(n log n) forms used on 165,600 validation pairs against the definitions, on tied scores."""
    from cloakbench.metrics.calibration import equal_error_rate
    from cloakbench.metrics.calibration import roc_auc as auc

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(4, 40))
        s, y = rng.integers(0, 6, n).astype(float), rng.random(n) < 0.4
        y[:2] = [True, False]
        pairs = [(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]]
        assert auc(s, y) == pytest.approx(np.mean(pairs))
        gaps = [abs(((s >= t) & ~y).sum() / (~y).sum() - ((s < t) & y).sum() / y.sum()) for t in np.unique(s)]
        t = np.unique(s)[int(np.argmin(gaps))]
        far, frr = ((s >= t) & ~y).sum() / (~y).sum(), ((s < t) & y).sum() / y.sum()
        assert equal_error_rate(s, y) == pytest.approx(((far + frr) / 2, t))


@pytest.mark.slow
def test_quick_training_is_reproducible(tmp_path):
    """`cloakbench mini train --quick` runs the full script; the same seed writes identical weights, and
    one model retrained alone equals the full run's."""
    cfg = replace(QUICK, unet_steps=2)
    m1 = train_all(tmp_path / "a", cfg, log=lambda _: None)
    m2 = train_all(tmp_path / "b", cfg, log=lambda _: None)
    for name in ("clip", "vae", "unet", "pixel", "vq", "sr", "identity"):
        h = [hashlib.sha256((tmp_path / d / f"{name}.safetensors").read_bytes()).hexdigest() for d in "ab"]
        assert h[0] == h[1], name
    assert m1["validation"] == m2["validation"]
    assert set(m1["validation"]) >= {"identity_auc_heldout", "clip_quality_auc", "vae_psnr", "unet_val_loss",
                                     "vq_psnr_restored", "sr_psnr", "identity_threshold", "codesr_identity_cos",
                                     "unet_sample_toy_rate", "unet_sample_colour_acc", "unet_sample_shape_acc",
                                     "unet_sample_pattern_acc", "unet_sample_verified", "readout_colour_acc_photos"}
    # each model has its own random stream and later models train on the fp16-rounded earlier ones:
    # the UNet (on the saved CLIP and VAE) and the codebook restorer retrained alone (``--only``) give
    # byte-identical files
    m3 = train_all(tmp_path / "c", cfg, log=lambda _: None, only=["unet", "vq"], base=tmp_path / "a")
    assert m3["retrained_alone"] == ["unet", "vq"]
    # the --base folder is the reference: same budget, another folder -> the per-model byte comparison
    assert m3["same_bytes_as_reference"] == {n: True for n in ("clip", "vae", "unet", "pixel", "vq", "sr", "identity")}
    assert "same_bytes_as_reference" not in m1  # the shipped weights are the reference, on another budget
    assert m1["kernels"] == m3["kernels"]
    for name in ("clip", "vae", "unet", "pixel", "vq", "sr", "identity"):
        h = [hashlib.sha256((tmp_path / d / f"{name}.safetensors").read_bytes()).hexdigest() for d in "ac"]
        assert h[0] == h[1], name
    assert m3["validation"] == m1["validation"]
    with pytest.raises(ValueError, match="unknown mini model"):
        train_all(tmp_path / "d", cfg, only=["unet2"], base=tmp_path / "a")

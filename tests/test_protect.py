"""Every protection on the tiny model and real faces at 128 px: budget, objective vs random noise, determinism."""

from __future__ import annotations

import pytest
import torch

from cloakbench.images import perturbation_norms, quantize, read_images
from cloakbench.models import build_tiny
from cloakbench.protect import create_protection, finalize, list_protections
from cloakbench.testing.quick import QUICK

FAST = QUICK  # small but real settings: every expensive part shrunk (cloakbench.testing.quick)
# Over ~20 s each on 2 cores (the rest of the family runs on every `./dev test`; CI runs all).
SLOW = {"adaptive", "aspl", "aspl-lora", "caat", "e-aspl", "fsmg", "metacloak", "mist", "photoguard-e2e", "simac"}
STEPS = 6


@pytest.fixture(scope="module")
def faces(shared_data):
    return read_images(shared_data / "faces/vggface2/id1/clean", 128).images[:2]


@pytest.fixture(scope="module")
def models(shared_data):
    """Two tiny surrogates, briefly trained on *other* faces so their loss depends on the image.

    A random UNet's denoising loss is nearly flat in the input, so no attack could beat random noise
    on it; 80 DreamBooth steps (lr 2e-3) on identity id2 make the tiny model a (poor) face denoiser.
    """
    from cloakbench.protect.surrogate import train_steps

    train = read_images(shared_data / "faces/vggface2/id2/clean", 128).images
    out = []
    for seed in (0, 5):
        m = build_tiny(seed=seed)
        train_steps(m, train, "a photo of sks person", 80, lr=2e-3, generator=torch.Generator().manual_seed(seed))
        out.append(m)
    return out


def test_all_protections_are_covered():
    """Every built-in protection has shrunk settings here (plugins installed in the environment are not ours)."""
    from cloakbench.protect import PROTECTIONS

    built_in = {e.name for e in PROTECTIONS.entries() if not e.meta.get("plugin")}
    assert set(FAST) == built_in and built_in <= set(list_protections())


def _make(name, **kw):
    proto = create_protection(name, steps=STEPS, **FAST[name])
    alpha = proto.eps / 3 if proto.norm == "linf" else proto.eps / 2
    return create_protection(name, steps=STEPS, alpha=alpha, **FAST[name], **kw)


@pytest.mark.data
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(FAST)
                                  if n != "random-noise"])  # the M3 control has no objective: tests/test_analysis.py
def test_protection(name, faces, models, tmp_path):
    surrogate = models if name == "e-aspl" else models[0]
    prot = _make(name)
    adv = prot(faces, surrogate, seed=0)
    clean = quantize(faces)
    # (a) measured budget after 8-bit rounding
    d = perturbation_norms(clean, adv)
    if prot.norm == "linf":
        assert d.linf_255.max() <= prot.eps * 255 + 1e-6, d.linf_255
        assert d.linf_255.max() >= 1  # it did perturb
    else:
        assert d.l2.max() <= prot.eps + 1e-6
    # (b) its own objective beats uniform random noise of the same budget
    g = torch.Generator().manual_seed(99)
    if prot.norm == "linf":
        noise = (torch.rand(clean.shape, generator=g) * 2 - 1) * prot.eps
    else:
        r = torch.randn(clean.shape, generator=g)
        noise = r / r.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * prot.eps
    rand = finalize((clean + noise).clamp(0, 1), clean, prot.eps, prot.norm)
    ev = prot.evaluate(adv, clean, surrogate, draws=6)
    er = prot.evaluate(rand, clean, surrogate, draws=6)
    assert ev > er, (name, ev, er)
    # (c) same seed -> byte-identical files
    again = _make(name)(faces, surrogate, seed=0)
    from cloakbench.images import save_images

    a = save_images(adv, tmp_path / "a")
    b = save_images(again, tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert prot.stats["updates"] == STEPS and prot.stats["seconds"] > 0


def test_unknown_option_and_bad_budget():
    with pytest.raises(TypeError, match="unknown option"):
        create_protection("aspl", nonsense=1)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        create_protection("advdm", eps=2.0)
    with pytest.raises(ValueError, match="steps"):
        create_protection("advdm", steps=0)


def test_finalize_linf_and_l2_exact():
    g = torch.Generator().manual_seed(0)
    x0 = quantize(torch.rand(2, 3, 16, 16, generator=g))
    x = (x0 + (torch.rand(x0.shape, generator=g) * 2 - 1) * 0.1).clamp(0, 1)
    out = finalize(x, x0, 6.375 / 255)
    assert perturbation_norms(x0, out).linf_255.max() <= 6.0
    out2 = finalize(x, x0, 0.5, "l2")
    raw = (x - x0).flatten(1).norm(dim=1)
    assert (perturbation_norms(x0, out2).l2 <= raw + 1e-6).all()


@pytest.mark.data
def test_cli_protect_end_to_end(shared_data, tmp_path):
    import json

    from typer.testing import CliRunner

    from cloakbench.cli import app

    src = shared_data / "faces/vggface2/id3/clean"
    out = tmp_path / "out"
    args = ["protect", "--method", "pid", "--model", "tiny", "--eps", "8/255", "--steps", "2", "--resolution", "128",
            "--seed", "3", str(src), str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "protection.json").read_text())
    assert rec["method"] == "pid" and rec["steps"] == 2 and rec["seed"] == 3 and rec["model"] == "tiny"
    assert rec["measured"]["linf_max_255"] <= 8.0 and len(rec["files"]) == 4
    assert sorted(p.name for p in (out / "clean").iterdir()) == sorted(p.name for p in src.iterdir())
    # anyone can re-measure from the files
    from cloakbench.images import perturbation_norms, read_images

    d = perturbation_norms(read_images(out / "clean", None).images, read_images(sorted(out.glob("*.png")), None).images)
    assert d.linf_255.tolist() == rec["measured"]["linf_255"]
    assert CliRunner().invoke(app, args).exit_code != 0  # refuses to overwrite without --overwrite


@pytest.mark.parametrize("args, message", [
    (["--method", "nope"], "unknown protection"),
    (["--method", "advdm", "--eps", "0"], "outside (0, 1]"),
    (["--method", "advdm", "--eps", "2"], "outside (0, 1]"),
    (["--method", "advdm", "--eps", "abc"], "cannot read budget"),
    (["--method", "advdm", "--resolution", "100"], "multiple of 8"),
    (["--method", "advdm", "--resolution", "128", "EMPTY"], "empty folder"),
    (["--method", "advdm", "NOMODEL"], "Missing option '--model'"),  # no silent default to the random-weight model
    (["--method", "aspl", "--surrogate-dir", "/nonexistent-set-A"], "is not a folder"),
])
def test_cli_protect_errors_before_work(tmp_path, args, message):
    from typer.testing import CliRunner

    from cloakbench.cli import app

    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    src = [str(empty)] if "EMPTY" in args else [str(tmp_path)]
    model = [] if "NOMODEL" in args else ["--model", "tiny"]
    args = [a for a in args if a not in ("EMPTY", "NOMODEL")]
    res = CliRunner().invoke(app, ["protect", *model, *args, *src, str(out)])
    import re

    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.output).split())
    assert res.exit_code == 2 and message in text, text
    assert not out.exists()  # nothing was started


def test_pid_var_losses_compare_the_posterior_std_as_the_reference():
    """PID's ``var`` / ``add`` losses use the posterior std (PID.py:229-230, 242-245), ``add-log`` the log-variance."""
    import torch.nn.functional as F

    from cloakbench.models import load_model

    m = load_model("tiny")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 64, 64, generator=g)
    x = (x0 + 0.05 * torch.randn(x0.shape, generator=g)).clamp(0, 1)
    d, d0 = m.vae.encode(x * 2 - 1).latent_dist, m.vae.encode(x0 * 2 - 1).latent_dist
    std = F.mse_loss(d.std, d0.std).item()
    logvar = F.mse_loss(d.logvar, d0.logvar).item()
    mean = F.mse_loss(d.mean, d0.mean).item()
    val = {loss: float(create_protection("pid", loss=loss).objective(x, x0, [m], g)) for loss in ("var", "add", "add-log")}
    assert val["var"] == pytest.approx(std, rel=1e-5) and val["add"] == pytest.approx(mean + std, rel=1e-5)
    assert val["add-log"] == pytest.approx(mean + logvar, rel=1e-5) and std != pytest.approx(F.mse_loss(d.var, d0.var).item())


def test_photoguard_defaults_are_the_img2img_notebooks():
    """Zero-latent target and step decay to alpha / 100 (MadryLab/photoguard img2img notebook); grey stays an option."""
    from cloakbench.models import load_model
    from cloakbench.protect.engine import PGD

    pg = create_protection("photoguard")
    assert pg.target == "zero" and pg.pgd().decay_to == 0.01
    pgd = PGD(8 / 255, 2 / 255, 10, decay=True, decay_to=0.01)
    x0 = torch.full((1, 3, 8, 8), 0.5)
    first = pgd.update(x0, x0, torch.ones_like(x0), 0) - x0
    last = pgd.update(x0, x0, torch.ones_like(x0), 10) - x0
    assert torch.allclose(first, torch.full_like(x0, 2 / 255)) and torch.allclose(last, torch.full_like(x0, 2 / 25500))
    m = load_model("tiny")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    zero = float(pg.objective(x, x, [m], None))
    assert zero == pytest.approx(-float(m.encode(x, sample=False).flatten(1).norm(dim=1).mean()), rel=1e-5)
    gray = float(create_protection("photoguard", target="gray").objective(x, x, [m], None))
    assert gray != pytest.approx(zero)


def test_simac_searches_timesteps_once_on_the_pretrained_model():
    """search="once" (the released code): one search per surrogate before the rounds, on the given (pretrained)
    model and the clean images; "every_round" searches each round's trained copy."""
    from cloakbench.models import load_model

    m = load_model("tiny")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for search, expected in (("once", 1), ("every_round", 3)):
        prot = create_protection("simac", steps=6, **{**QUICK["simac"], "search": search})
        seen = []
        real = prot.select_timesteps
        prot.select_timesteps = lambda model, imgs, gen, **kw: seen.append((model, imgs.clone(), kw)) or real(model, imgs, gen, **kw)
        prot(x, m, seed=0)
        assert len(seen) == expected  # 6 steps / 2 per round = 3 rounds
        if search == "once":
            assert seen[0][0] is m and seen[0][2] == {"reference": True} and torch.equal(seen[0][1], quantize(x))
        else:
            assert all(model is not m for model, _, _ in seen)
    sets = create_protection("simac", **{**QUICK["simac"], "search_steps": 3}).select_timesteps(
        m, x, torch.Generator().manual_seed(0), reference=True)
    assert len(sets) == 1 and 1000 - 3 * 40 <= sets[0].numel() < 1000  # three +-20 windows deleted (may overlap)


@pytest.mark.data
def test_cli_protect_surrogate_dir_is_anti_dreambooths_set_a(shared_data, tmp_path):
    """``--surrogate-dir``: ASPL's surrogates train on the protector's own clean photos (set_A), not the inputs."""
    import json

    from typer.testing import CliRunner

    from cloakbench.cli import app

    set_b, set_a = shared_data / "faces/vggface2/id3/clean", shared_data / "faces/vggface2/id2/clean"
    res = CliRunner().invoke(app, ["protect", "-m", "aspl", "--model", "tiny", "--steps", "1", "--resolution", "64",
                                   "-o", "pgd_steps=1", "-o", "surrogate_steps=1", "-o", "train_steps=1",
                                   "--surrogate-dir", str(set_a), str(set_b), str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "out" / "protection.json").read_text())
    assert sorted(map(lambda p: p.rsplit("/", 1)[-1], rec["surrogate_images"])) == sorted(p.name for p in set_a.iterdir())
    assert len(rec["files"]) == len(list(set_b.iterdir()))

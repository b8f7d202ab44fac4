"""ADM (guided-diffusion) UNet + diffusion for pixel DiffPure / GrIDPure: layout, chain, loading, paper settings.

The pinned layout numbers below were computed once from openai/guided-diffusion's own ``UNetModel``
(``script_util.create_model_and_diffusion`` with DiffShortcut's flags, ``diffshortcut/defenses/gridpure.py:8-45``),
built on the meta device beside :class:`AdmUNet`: same 566 names and shapes. No network, no reference repo here.
"""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from cloakbench.purify import create_purifier
from cloakbench.purify.adm import (ADM_256_UNCOND, TINY_ADM, AdmDiffusion, AdmUNet, build_tiny_adm, load_adm,
                                   space_timesteps)
from cloakbench.purify.pixel_diffpure import diffpure
from cloakbench.purify.pixel_diffusion import PAPER_OPTIONS, build_tiny_pixel_model, load_pixel_model

# guided-diffusion UNetModel(256 px, 256 ch, mult 1,1,2,2,4,4, attention 32,16,8, 64 ch/head, learn_sigma,
# resblock_updown, scale-shift norm): state_dict keys, parameters, sha256 of the sorted "name:shape" lines.
REF_KEYS, REF_PARAMS = 566, 552_814_086
REF_LAYOUT_SHA256 = "77426b1717ef703c9571d14dd0f89b54ce78ce1bc1eb0749c2ade3807bda89a5"


def test_full_size_layout_matches_the_checkpoint_class():
    with torch.device("meta"):
        net = AdmUNet(ADM_256_UNCOND)
    sd = net.state_dict()
    lines = sorted(f"{k}:{tuple(v.shape)}" for k, v in sd.items())
    assert len(sd) == REF_KEYS and sum(v.numel() for v in sd.values()) == REF_PARAMS
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == REF_LAYOUT_SHA256
    assert sd["input_blocks.0.0.weight"].shape == (256, 3, 3, 3) and sd["out.2.weight"].shape == (6, 256, 3, 3)
    assert sd["middle_block.1.qkv.weight"].shape == (3072, 1024, 1)  # 16 heads of 64 channels
    assert sd["input_blocks.1.0.emb_layers.1.weight"].shape == (512, 1024)  # FiLM scale + shift, 1024-d embedding


def test_tiny_adm_forward_shapes_and_torso_dtype():
    net = build_tiny_adm(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = net(x, torch.tensor([5, 500]))
    assert out.shape == (2, 6, 32, 32) and out.dtype == torch.float32  # eps (3) + variance interpolation (3)
    assert net(torch.zeros(1, 3, 64, 48), 10).shape == (1, 6, 64, 48)  # any size divisible by 2, scalar t
    half = build_tiny_adm(0).convert_torso(torch.float16)
    assert half.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    kept32 = (half.time_embed[0].weight, half.out[2].weight, half.input_blocks[1][0].in_layers[0].weight)
    assert all(w.dtype == torch.float32 for w in kept32)  # embedding, last conv, norms: fp32 (as convert_to_fp16)
    assert torch.allclose(half(x, torch.tensor([5, 500])), out, atol=5e-3)


def test_respacing_and_chains():
    kept = space_timesteps(1000, 250)
    assert len(kept) == 250 and kept[:11] == list(range(0, 41, 4)) and kept[100] == 401 and kept[-1] == 999
    d = AdmDiffusion()
    assert d.chain(10, 10, respacing=250) == (list(range(0, 41, 4)), False)  # DiffShortcut: t=10 respaced = 40
    assert d.chain(10, 10) == (list(range(1, 11)), True) and d.chain(100, 4) == ([25, 50, 75, 100], True)
    with pytest.raises(ValueError, match="steps == t_star"):
        d.chain(10, 5, respacing=250)
    ac = d.alphas_cumprod  # float64, as numpy's cumprod(1 - linspace(1e-4, 0.02, 1000)): a[40] = 0.979767
    assert ac.dtype == torch.float64 and float(ac[40]) == pytest.approx(0.979767, abs=1e-6)


class Oracle(torch.nn.Module):
    """Predicts the exact noise of a known x0 (eps = (x - sqrt(a) x0) / sqrt(1 - a)); variance output -1
    (the posterior variance). Records the timesteps it is called with."""

    def __init__(self, x0: torch.Tensor, ac: torch.Tensor) -> None:
        super().__init__()
        self.x0, self.ac, self.calls = x0, ac, []
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t):
        self.calls.append(int(t[0]))
        a = float(self.ac[int(t[0])])
        return torch.cat([(x - math.sqrt(a) * self.x0) / math.sqrt(1 - a), -torch.ones_like(x)], 1)


def test_chain_math_with_an_oracle_model():
    d, g = AdmDiffusion(), torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 64, 64, generator=g) * 1.6 - 0.8
    noise = lambda: torch.randn(x0.shape, generator=g)  # noqa: E731
    oracle = Oracle(x0, d.alphas_cumprod)
    assert torch.allclose(d.purify(oracle, x0, 10, 10, noise), x0, atol=1e-5)  # ends on the noiseless step
    assert oracle.calls == list(range(10, 0, -1))
    oracle.calls.clear()
    out = d.purify(oracle, x0, 10, 10, noise, respacing=250)
    assert oracle.calls == list(range(40, 0, -4))  # the model sees original steps (respace.py _WrappedModel)
    # with exact x0 and the posterior variance every step samples q(x_prev | x_t, x0), so the output (the sample
    # at original step 0, the last p_sample being skipped) is distributed as q(x_0 | x0) = N(sqrt(a_0) x0, 1 - a_0)
    a0 = float(d.alphas_cumprod[0])
    assert (out - math.sqrt(a0) * x0).std().item() == pytest.approx(math.sqrt(1 - a0), rel=0.03)


def test_load_adm_strict_and_errors(tmp_path, monkeypatch):
    from cloakbench.errors import ModelLoadError
    from cloakbench.weights import MissingWeightError

    net = build_tiny_adm(1)
    path = tmp_path / "tiny.pt"
    torch.save(net.state_dict(), path)
    loaded, sched = load_adm(str(path), cfg=TINY_ADM)
    x = torch.rand(1, 3, 32, 32)
    assert isinstance(sched, AdmDiffusion) and torch.equal(loaded(x, 7), net(x, 7))
    half, _ = load_adm(str(path), dtype=torch.float16, cfg=TINY_ADM)
    assert half.middle_block[0].in_layers[2].weight.dtype == torch.float16 and half.out[2].weight.dtype == torch.float32
    with pytest.raises(ModelLoadError, match="expected layout"):  # a .pt path is read as the 256 px checkpoint
        load_pixel_model(str(path))
    monkeypatch.setenv("CLOAKBENCH_HOME", str(tmp_path / "home"))
    with pytest.raises(MissingWeightError, match="cloakbench weights fetch adm-256-uncond"):
        load_pixel_model("adm-256-uncond")


def test_paper_gridpure_takes_nine_tiles_without_mosaic():
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    seen = []
    g = create_purifier("gridpure", **{**PAPER_OPTIONS["gridpure"], "tile_fn": lambda t: seen.append(t) or t})
    assert torch.allclose(g(x), x, atol=1e-6)
    assert len(seen) == 10 and all(t.shape == (9, 3, 256, 256) for t in seen)  # 10 iterations x 9 tiles
    crops = [x[0, :, i : i + 256, j : j + 256] for i in (0, 128, 256) for j in (0, 128, 256)]
    assert all(torch.equal(a, b) for a, b in zip(seen[0], crops))  # the 3 x 3 grid only: no corner mosaic
    seen.clear()
    create_purifier("gridpure", tile_fn=lambda t: seen.append(t) or t)(x)  # GrIDPure's own: 20 x (9 + mosaic)
    assert len(seen) == 20 and seen[0].shape[0] == 10


@pytest.mark.parametrize("units", ["reference", "consistent"])
def test_gridpure_and_diffpure_run_on_tiny_adm(units):
    """The paper options scaled down: 16 px tiles at stride 8 on 32 px (3 x 3), 3 respaced steps, 2 rounds."""
    pm = (build_tiny_adm(0), AdmDiffusion())
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    small = {"model": "unused", "pixel_model": pm, "tile": 16, "stride": 8, "t_star": 3, "steps": 3, "units": units}
    grid = {**PAPER_OPTIONS["gridpure"], **small, "iterations": 2}
    a = create_purifier("gridpure", seed=3, **grid)(x)
    assert a.shape == x.shape and torch.isfinite(a).all() and 0 <= a.min() and a.max() <= 1 and not torch.equal(a, x)
    assert torch.allclose(a, create_purifier("gridpure", seed=3, tile_batch=1, **grid)(x), atol=1e-5)  # batching-free
    assert not torch.allclose(a, create_purifier("gridpure", seed=4, **grid)(x), atol=1e-4)
    b = create_purifier("pixel-diffpure", seed=3, **{**PAPER_OPTIONS["pixel-diffpure"], **small})(x)
    assert b.shape == x.shape and torch.isfinite(b).all() and not torch.equal(b, x)
    c = create_purifier("pixel-diffpure", seed=3, **{**small, "t_star": 20})(x)  # original steps, noiseless end
    assert c.shape == x.shape and torch.isfinite(c).all() and not torch.equal(c, b)
    assert create_purifier("ddspure", pixel_model=pm, size=16)(x).shape == x.shape


def test_respacing_needs_adm():
    unet, sched = build_tiny_pixel_model(size=32)
    with pytest.raises(ValueError, match="ADM"):
        diffpure(unet, sched, torch.rand(1, 3, 32, 32), 10, 10, torch.Generator(), respacing=250)


def test_paper_faces_config_uses_the_paper_options():
    from pathlib import Path

    import yaml

    from cloakbench.bench.config import BenchConfig

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "paper-faces.yaml").read_text())
    cfg = BenchConfig.model_validate(raw)  # the schema only: its data.root is the user's VGGFace2 folder
    assert {k: cfg.purify_options[k] for k in PAPER_OPTIONS} == PAPER_OPTIONS


# ------------------------------------------------------------------ DDSPure (DiffShortcut defenses/ddspure.py)


def _reference_opt_t(delta: float) -> int:
    """DiffShortcut's ``get_opt_t`` as its code reads (``ddspure.py:96-117``): a Python-float table of the linear
    1000-step schedule, the two entries around 1 / (1 + delta^2) compared, the answer counted from 1."""
    ab = [1 - ((t - 1) / 999 * (0.02 - 0.0001) + 0.0001) for t in range(1, 1001)]
    for t in range(1, 1000):
        ab[t] *= ab[t - 1]
    target = 1 / (1 + delta**2)
    if target > ab[0]:
        return 1
    if target <= ab[-1]:
        return 1000
    for t, a in enumerate(ab):
        if a < target:
            return t if abs(target - ab[t - 1]) < abs(target - a) else t + 1
    raise AssertionError


def test_ddspure_default_is_unchanged():
    """Values pinned from the one-shot DDSPure before the chain mode was added (same seed, inputs, models)."""
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    pins = {"adm": (3027.4391034394503, 1524.1846934787623, [0.4313948452, 0.5148251057, 0.6816855669, 0.7119154334]),
            "ddpm": (3019.9815151691437, 1516.5312041163925, [0.4388074279, 0.5227961540, 0.6907736063, 0.7196129560])}
    consistent = {"adm": 3032.138410910964, "ddpm": 3017.344773694873}
    for name, pm in [("adm", (build_tiny_adm(0), AdmDiffusion())), ("ddpm", build_tiny_pixel_model(seed=0, size=16))]:
        p = create_purifier("ddspure", pixel_model=pm, size=16, seed=7)
        assert (p.mode, p.respacing, p.iterations, p.interpolation) == ("oneshot", 0, 1, "bilinear")
        y = p(x).double()
        assert p.timestep() == 9  # nearest original step (0-based) for 11/255
        total, squares, row = pins[name]
        assert y.sum().item() == pytest.approx(total, rel=1e-7)
        assert y.pow(2).sum().item() == pytest.approx(squares, rel=1e-7)
        assert torch.allclose(y[0, 0, 0, :4], torch.tensor(row, dtype=torch.float64), atol=1e-6)
        c = create_purifier("ddspure", pixel_model=pm, size=16, seed=7, units="consistent")
        assert c.timestep() == 22 and c(x).double().sum().item() == pytest.approx(consistent[name], rel=1e-7)


def test_ddspure_reference_timestep():
    from cloakbench.purify.ddspure import DDSPure

    pm = (build_tiny_adm(0), AdmDiffusion())
    chain = create_purifier("ddspure", **{**PAPER_OPTIONS["ddspure"], "pixel_model": pm})
    assert chain.timestep() == _reference_opt_t(11 / 255) == 10  # --perturb_r 11: respaced 10 = original step 40
    assert create_purifier("ddspure", pixel_model=pm).timestep() == 9  # one-shot: nearest entry, 0-based
    for r in [0, 0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 11, 12, 16, 22, 24, 32, 48, 64, 128, 255, 2000, 1e5]:
        assert DDSPure.reference_timestep(1 / (1 + (r / 255) ** 2)) == _reference_opt_t(r / 255), r
    with pytest.raises(ValueError, match="t_star < 250"):  # t = 1000 is past the 250-step chain (an IndexError there)
        create_purifier("ddspure", **{**PAPER_OPTIONS["ddspure"], "pixel_model": pm, "size": 16, "radius": 1e5})(
            torch.rand(1, 3, 16, 16))


class _Recorder(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x, t):
        self.calls.append(torch.as_tensor(t).reshape(-1).tolist())
        return self.net(x, t)


def _guided_diffusion_chain(net, x01: torch.Tensor, t: int, g: torch.Generator) -> torch.Tensor:
    """DiffShortcut's ``denoise`` (``ddspure.py:119-135``) on one image, written from guided-diffusion's arrays:
    ``SpacedDiffusion`` of 250 steps (betas recomputed over the kept steps, respace.py), ``q_sample`` at respaced
    index t, ``p_sample`` (learned-range variance, x0 clipped) for i = t .. 1, no step at index 0."""
    import numpy as np

    full = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    kept = [round(i * 999 / 249) for i in range(t + 1)]  # the first kept steps of a 250-step respacing
    assert kept == list(range(0, 4 * t + 1, 4))
    betas, last = [], 1.0
    for k in kept:
        betas.append(1 - full[k] / last)
        last = full[k]
    betas = np.array(betas)
    ac = np.cumprod(1 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    post_log = np.log(np.append(post_var[1], post_var[1:]))
    c1, c2 = betas * np.sqrt(ac_prev) / (1 - ac), (1 - ac_prev) * np.sqrt(1 - betas) / (1 - ac)
    f = lambda arr, i: torch.tensor(arr[i]).float()  # noqa: E731  (_extract_into_tensor: float64 -> float32)
    x = f(np.sqrt(ac), t) * x01 + f(np.sqrt(1 - ac), t) * torch.randn(x01.shape, generator=g)
    for i in range(t, 0, -1):
        out = net(x, torch.tensor([kept[i]]))
        eps, v = out[:, :3], out[:, 3:]
        x0 = (f(np.sqrt(1 / ac), i) * x - f(np.sqrt(1 / ac - 1), i) * eps).clamp(-1, 1)
        mean = f(c1, i) * x0 + f(c2, i) * x
        frac = (v + 1) / 2
        log_var = frac * f(np.log(betas), i) + (1 - frac) * f(post_log, i)
        x = mean + torch.exp(0.5 * log_var) * torch.randn(x.shape, generator=g)
    return x


def test_ddspure_chain_matches_a_step_by_step_reference():
    """PAPER_OPTIONS["ddspure"] on the tiny ADM (size 16 instead of 256): bicubic to 16, [0, 1] into the 250-step
    chain from respaced 10 (original 40) down to 1, bicubic back; every image with its own seeded noise."""
    import torch.nn.functional as F

    from cloakbench.purify.pixel_diffusion import tile_generators

    net = _Recorder(build_tiny_adm(0))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    opts = {**PAPER_OPTIONS["ddspure"], "size": 16}
    p = create_purifier("ddspure", seed=4, **opts, pixel_model=(net, AdmDiffusion()))
    y = p(x)
    assert net.calls == [[s, s] for s in range(40, 0, -4)]  # batched; the model sees original steps 40 .. 4
    small = F.interpolate(x, size=(16, 16), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    gens = tile_generators(4, 0, [0, 1])
    ref = torch.cat([_guided_diffusion_chain(net.net, small[b : b + 1], 10, gens[b]) for b in range(2)]).clamp(0, 1)
    ref = F.interpolate(ref, size=(32, 32), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert y.shape == x.shape and torch.allclose(y, ref, atol=2e-5)
    assert torch.equal(p(x), y)  # seeded: the same output again
    two = create_purifier("ddspure", seed=4, **{**opts, "iterations": 2}, pixel_model=(net.net, AdmDiffusion()))(x)
    assert two.shape == x.shape and not torch.allclose(two, y, atol=1e-3)


def test_ddspure_bicubic_matches_pil_default_resize():
    """The reference resizes with PIL's default filter (``ddspure.py:167, 169``: ``Image.resize`` without one),
    bicubic for RGB; antialiased torch bicubic agrees to within one 8-bit level on a smooth image."""
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image

    pm = (build_tiny_adm(0), AdmDiffusion())
    p = create_purifier("ddspure", **{**PAPER_OPTIONS["ddspure"], "pixel_model": pm})
    base = torch.rand(1, 3, 8, 6, generator=torch.Generator().manual_seed(0))
    u8 = (F.interpolate(base, size=(64, 48), mode="bilinear", align_corners=False) * 255).round()
    img = Image.fromarray(u8[0].permute(1, 2, 0).byte().numpy())
    for size in [(32, 32), (128, 128), (20, 70)]:
        pil = img.resize(size[::-1])
        assert pil.tobytes() == img.resize(size[::-1], Image.Resampling.BICUBIC).tobytes()
        ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1)[None].float() / 255
        for back in (False, True):
            assert (p.resize(u8 / 255, size, back=back) - ref).abs().max() <= 1.1 / 255
    assert torch.equal(p.resize(u8 / 255, (64, 48), back=False), u8 / 255)  # same size: unchanged, as PIL


def test_ddspure_option_checks():
    pm = (build_tiny_adm(0), AdmDiffusion())
    for bad, match in [({"mode": "steps"}, "mode"), ({"interpolation": "nearest"}, "interpolation"),
                       ({"respacing": 250}, "respacing applies")]:
        with pytest.raises(ValueError, match=match):
            create_purifier("ddspure", pixel_model=pm, **bad)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    plain = create_purifier("ddspure", pixel_model=pm, size=16, mode="chain")  # original steps 10 .. 1, then x0
    assert plain.timestep() == 10 and plain(x).shape == x.shape
    with pytest.raises(ValueError, match="ADM"):
        create_purifier("ddspure", pixel_model=build_tiny_pixel_model(size=16), size=16, mode="chain", respacing=250)(x)

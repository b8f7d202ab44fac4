"""Purifiers: CodeSR with a random-weight CodeFormer through spandrel, GrIDPure tiling, every baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cloakbench.images import read_images
from cloakbench.purify import create_purifier, list_purifiers
from cloakbench.purify.pixel_diffusion import build_tiny_pixel_model, grid_purify, tile_positions


@pytest.fixture(scope="module")
def codeformer_ckpt(tmp_path_factory):
    """A random-weight CodeFormer of the real architecture, saved as the reference does ({'params_ema': ...})."""
    pytest.importorskip("spandrel_extra_arches")
    from spandrel_extra_arches.architectures.CodeFormer.__arch.codeformer import CodeFormer

    torch.manual_seed(0)
    net = CodeFormer(dim_embd=64, n_head=8, n_layers=2, codebook_size=64, connect_list=["32", "64"])
    path = tmp_path_factory.mktemp("cf") / "codeformer-random.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def face(shared_data):
    return read_images(shared_data / "faces/vggface2/id1/protected-metacloak", 512).images[:1]


@pytest.mark.data
def test_codeformer_stage_changes_face_keeps_background(codeformer_ckpt, face, shared_data):
    stage = create_purifier("codeformer", weights=str(codeformer_ckpt))
    assert type(stage.desc.model).__name__ == "CodeFormer"  # detected and loaded by spandrel
    art = read_images(shared_data / "art/vangogh", 512).images[:1]  # no face in a painting of trees
    out = stage(torch.cat([face, art]))
    assert out.shape == (2, 3, 1024, 1024) and stage.faces_found == [1, 0]
    up = torch.nn.functional.interpolate(torch.cat([face, art]), size=(1024, 1024), mode="bilinear", align_corners=False)
    assert torch.allclose(out[1], up[1], atol=1e-6)  # no face: resampling only
    diff = (out[0] - up[0]).abs().amax(0)
    from cloakbench.purify.face_align import face_box_mask

    box = face_box_mask(face[0])  # 512 px face box, upscaled to the 1024 output
    box = torch.nn.functional.interpolate(box[None, None].float(), size=(1024, 1024))[0, 0].bool()
    changed = diff > 1e-6
    assert diff[box].mean() > 0.02  # the face region was restored
    assert changed.float().mean() < 0.95 and not changed[:40].any()  # background (top rows) only resampled


@pytest.mark.data
def test_codeformer_fidelity_reaches_the_network(codeformer_ckpt):
    """The fidelity weight w is passed by the name the network takes (spandrel: ``weight``); before, ``w=``
    fell into ``**kwargs`` and every fidelity gave the 0.5 output."""
    from cloakbench.purify.codeformer import fidelity_keyword

    crop = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    out = {w: create_purifier("codeformer", weights=str(codeformer_ckpt), fidelity=w).restore(crop) for w in (0.0, 0.5, 1.0)}
    default = create_purifier("codeformer", weights=str(codeformer_ckpt)).restore(crop)
    assert torch.equal(out[0.5], default) and not torch.allclose(out[0.0], out[1.0], atol=1e-4)
    net = create_purifier("codeformer", weights=str(codeformer_ckpt)).desc.model
    assert fidelity_keyword(net, 0.7) == {"weight": 0.7}


def test_codesr_fast_end_to_end(codeformer_ckpt, face):
    p = create_purifier("codesr-fast", weights=str(codeformer_ckpt), pre_size=32)
    out = p(face)
    assert out.shape == (1, 3, 128, 128) and p.stats["seconds_per_image"] > 0
    assert set(p.part_seconds) == {"codeformer", "realesrgan"}


def test_missing_codeformer_weights_clear_error():
    from cloakbench.weights import MissingWeightError

    pytest.importorskip("spandrel_extra_arches")
    with pytest.raises(MissingWeightError, match="cloakbench weights fetch codeformer"):
        create_purifier("codesr-fast")


def test_grid_tiles_cover_and_average():
    assert tile_positions(512, 256, 128) == [0, 128, 256] and tile_positions(200, 256, 128) == [0]
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    ident = grid_purify(x, lambda t, keys: t)
    assert torch.allclose(ident, x, atol=1e-6)
    ones = grid_purify(torch.zeros(1, 1, 512, 512), lambda t, keys: torch.ones_like(t))
    assert torch.equal(ones, torch.ones_like(ones))  # every pixel covered

    def const(t, keys):  # each window's value: its 1-based row-major index
        return torch.stack([torch.full_like(t[0], float(k + 1)) for k in keys])

    for batch in (0, 1, 4):
        avg = grid_purify(torch.zeros(1, 1, 512, 512), const, corners=False, batch=batch)
        # pixel (200, 200) lies in tiles 1, 2, 4, 5 (row-major 3 x 3 grid, 1-based): mean 3.0
        assert avg[0, 0, 200, 200].item() == pytest.approx(3.0) and avg[0, 0, 10, 10].item() == 1.0


@pytest.mark.parametrize("name", ["gridpure", "pixel-diffpure"])
def test_batched_tiles_equal_tile_by_tile(name):
    """All tiles of a round in one UNet call give what one call per tile gives (each tile seeds its own noise)."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    kw = {"pixel_model": build_tiny_pixel_model(size=32), "tile": 32, "stride": 16, "t_star": 20, "steps": 3}
    if name == "gridpure":
        kw["iterations"] = 2
    batched = create_purifier(name, seed=5, **kw)(x)
    one_by_one = create_purifier(name, seed=5, tile_batch=1, **kw)(x)
    assert torch.allclose(batched, one_by_one, atol=1e-5), (batched - one_by_one).abs().max()
    assert not torch.allclose(batched, create_purifier(name, seed=6, **kw)(x), atol=1e-3)  # the seed matters


def test_gridpure_identity_model_is_exact_and_gamma_blend():
    x = torch.rand(2, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    g = create_purifier("gridpure", tile_fn=lambda t: t, iterations=3)
    assert torch.allclose(g(x), x, atol=1e-6)
    half = create_purifier("gridpure", tile_fn=lambda t: t * 0.0, iterations=2, gamma=0.1)
    assert torch.allclose(half(x), x * 0.01, atol=1e-6)  # (1 - g) * 0 + g * x, twice


@pytest.mark.parametrize("name, kw", [
    ("jpeg", {}), ("blur", {}), ("noise", {}), ("tvm", {"iters": 20}),
    ("pixel-diffpure", {"t_star": 20, "steps": 2, "tile": 64, "stride": 32}),
    ("gridpure", {"t_star": 10, "steps": 2, "iterations": 2, "tile": 64, "stride": 32}),
    ("ddspure", {"size": 64}),
])
def test_baselines_run_deterministic(name, kw):
    if name in ("pixel-diffpure", "gridpure", "ddspure"):
        kw = {**kw, "pixel_model": build_tiny_pixel_model(size=64)}
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    a = create_purifier(name, seed=3, **kw)(x)
    b = create_purifier(name, seed=3, **kw)(x)
    assert a.shape == x.shape and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, x)


def test_latent_purifiers_on_tiny_sd(tiny_model):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    for name, kw in (("latent-diffpure", {"t_star": 30, "steps": 3}), ("latent-diffpure-empty", {"t_star": 30, "steps": 3}),
                     ("impress", {"iters": 3, "perceptual": "ssim"})):
        out = create_purifier(name, model=tiny_model, **kw)(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="perceptual"):
        create_purifier("impress", model=tiny_model, perceptual="nope")


def test_sd_upscaler_and_noisy_upscale_from_folder(tmp_path):
    from cloakbench.purify.sd_upscaler import build_upscaler

    build_upscaler(tiny=True).save_pretrained(tmp_path / "up")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    sr = create_purifier("sd-upscaler", model=str(tmp_path / "up"), steps=2, pre_size=16)
    assert sr(x).shape == (1, 3, 64, 64)  # 16 -> x4
    noisy = create_purifier("noisy-upscale", model=str(tmp_path / "up"), steps=2)
    assert noisy(x).shape == x.shape  # resized back to the input size
    from cloakbench.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="not available"):
        create_purifier("sd-upscaler", model="someone/not-cached-upscaler")


def test_bpda_and_compose():
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    y = create_purifier("jpeg").bpda(x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    c = create_purifier("jpeg+blur", quality=50)
    assert c.name == "jpeg+blur" and c.parts[0].quality == 50 and c(x.detach()).shape == x.shape
    assert "codesr" in list_purifiers()


@pytest.mark.data
def test_cli_purify_writes_json_and_refuses_bad_folders(shared_data, tmp_path):
    import re
    import shutil

    from PIL import Image
    from typer.testing import CliRunner

    from cloakbench.cli import app

    src = shared_data / "faces/vggface2/id2/protected-metacloak"
    res = CliRunner().invoke(app, ["purify", "--method", "jpeg", "-o", "quality=60", str(src), str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "out/purification.json").read_text())
    assert rec["method"] == "jpeg" and rec["config"]["quality"] == 60 and rec["seconds_per_image"] > 0
    assert len(rec["files"]) == 4 and rec["fidelity"] == {}  # no clean/ beside these inputs
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    (bad / "notes.png").write_text("not an image")
    Image.new("RGB", (32, 32)).save(bad / "tiny.png")
    res = CliRunner().invoke(app, ["purify", "--method", "jpeg", str(bad), str(tmp_path / "out2")])
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.output).split())
    assert res.exit_code == 2 and "notes.png" in text and "tiny.png" in text
    assert not (tmp_path / "out2").exists()  # nothing half-written
    res = CliRunner().invoke(app, ["purify", "--method", "jpeg", "--skip-bad", str(bad), str(tmp_path / "out3")])
    assert res.exit_code == 0 and len(list((tmp_path / "out3").glob("*.png"))) == 4


def test_inference_dtype_defaults_half_on_cuda_fp32_on_cpu():
    from cloakbench.models.device import default_dtype
    from cloakbench.purify.pixel_diffpure import PixelDiffPure
    from cloakbench.purify.sd_upscaler import SDUpscaler

    assert default_dtype("cpu") == torch.float32 and default_dtype("cuda") == torch.bfloat16
    assert default_dtype("cuda", "fp16") == torch.float16
    assert create_purifier("jpeg").model_dtype() == torch.float32  # this machine: CPU
    assert create_purifier("jpeg", device="cuda").model_dtype() == torch.bfloat16  # no model is built for jpeg
    assert create_purifier("jpeg", device="cuda", dtype="fp32").model_dtype() == torch.float32  # --dtype wins
    assert SDUpscaler.half == PixelDiffPure.half == "fp16"  # the reference implementations' precision


def test_purify_record_counts_faces_per_image(codeformer_ckpt):
    """The purify stage records CodeFormer's face count per file (0 = restoration skipped); the detector
    option reaches CodeFormer through CodeSR and a wrong one is refused."""
    from cloakbench.stages.purification import faces_found

    p = create_purifier("codesr-fast", weights=str(codeformer_ckpt), pre_size=32, detector="hog")
    assert p.parts[0].detector == "hog" and create_purifier("codeformer", weights=str(codeformer_ckpt)).detector == "hog+cnn"
    p.parts[0].faces_found = [1, 0]
    assert faces_found(p, ["a", "b"]) == {"faces_per_image": {"a.png": 1, "b.png": 0}}
    assert faces_found(create_purifier("jpeg"), ["a"]) == {}
    with pytest.raises(ValueError, match="face detector"):
        p.parts[0].detector = "retina"
        p.parts[0](torch.rand(1, 3, 64, 64))


def test_spandrel_sr_needs_no_face_restoration_extra(monkeypatch):
    """A plain SR checkpoint (the mini stack's Compact x2) loads through spandrel alone: the non-commercial
    CodeFormer extra is needed only for face-restoration architectures, and its absence is then named."""
    import sys

    from cloakbench.models.mini.stack import SHIPPED
    from cloakbench.purify import PURIFIERS
    from cloakbench.purify.spandrel_io import load_restorer

    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", None)  # as if `cloakbench[codeformer]` were absent
    desc = load_restorer.__wrapped__(str(Path(SHIPPED) / "sr.safetensors"))
    assert desc.scale == 2 and desc.architecture.name == "RealESRGAN Compact"
    assert PURIFIERS.get("spandrel-sr").factory.requires == ("spandrel",)

"""The model bundle: loss, input gradients, determinism, save / reload offline, loaders' errors."""

from __future__ import annotations

import pytest
import torch

from cloakbench.models import ModelLoadError, build_tiny, load_model, pick_device

PROMPT = "a photo of sks person"


def _images(b=2, seed=0):
    return torch.rand(b, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_tiny_uses_real_classes_and_tokenizer(tiny_model):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    assert isinstance(tiny_model.vae, AutoencoderKL) and isinstance(tiny_model.unet, UNet2DConditionModel)
    assert isinstance(tiny_model.text_encoder, CLIPTextModel)
    assert tiny_model.tokenize([PROMPT])[0, :7].tolist() == [49406, 320, 1125, 539, 48136, 2533, 49407]
    assert tiny_model.tokenizer.tokenize("bhj noisy pattern") == ["bh", "j</w>", "noisy</w>", "pattern</w>"]
    assert tiny_model.resolution == 64 and tiny_model.prediction_type == "epsilon"
    assert tiny_model.dtype == torch.float32 and tiny_model.device == torch.device("cpu")
    assert not any(p.requires_grad for p in tiny_model.unet.parameters())


def test_loss_finite_gradient_to_pixels_and_deterministic(tiny_model):
    x = _images().requires_grad_(True)
    loss = tiny_model.loss(x, PROMPT, generator=torch.Generator().manual_seed(7))
    loss.backward()
    assert torch.isfinite(loss) and loss.ndim == 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    again = tiny_model.loss(x.detach(), PROMPT, generator=torch.Generator().manual_seed(7))
    assert again.item() == loss.item()
    other = tiny_model.loss(x.detach(), PROMPT, generator=torch.Generator().manual_seed(8))
    assert other.item() != loss.item()


def test_loss_explicit_timesteps_noise_and_per_image(tiny_model):
    x = _images()
    noise = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    per = tiny_model.loss(x, [PROMPT, "a dog"], timesteps=torch.tensor([10, 900]), noise=noise, generator=g,
                          reduction="none")
    assert per.shape == (2,) and torch.isfinite(per).all()
    mean = tiny_model.loss(x, [PROMPT, "a dog"], timesteps=torch.tensor([10, 900]), noise=noise,
                           generator=torch.Generator().manual_seed(0))
    assert mean.item() == pytest.approx(per.mean().item(), rel=1e-6)


def test_v_prediction_target_differs():
    eps, v = build_tiny(prediction_type="epsilon"), build_tiny(prediction_type="v_prediction")
    x = _images(1)
    a = eps.loss(x, PROMPT, timesteps=500, generator=torch.Generator().manual_seed(0))
    b = v.loss(x, PROMPT, timesteps=500, generator=torch.Generator().manual_seed(0))
    assert v.prediction_type == "v_prediction" and a.item() != b.item()


def test_encode_decode_shapes_and_range(tiny_model):
    x = _images(1)
    z = tiny_model.encode(x, sample=False)
    assert z.shape == (1, 4, 32, 32)
    y = tiny_model.decode(z)
    assert y.shape == x.shape and 0.0 <= y.min() and y.max() <= 1.0
    emb = tiny_model.encode_prompt([PROMPT, PROMPT])
    assert emb.shape == (2, 77, 8)


def test_save_reload_offline_identical(tmp_path):
    import huggingface_hub.constants as hc

    assert hc.HF_HUB_OFFLINE  # conftest sets HF_HUB_OFFLINE=1 before any import
    model = build_tiny(seed=3)
    out = model.save(tmp_path / "tiny")
    assert (out / "model_index.json").is_file() and (out / "cloakbench.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    again = load_model(out, device="cpu")
    x = _images(1)
    a = model.loss(x, PROMPT, generator=torch.Generator().manual_seed(0))
    b = again.loss(x, PROMPT, generator=torch.Generator().manual_seed(0))
    assert a.item() == b.item()
    assert torch.equal(model.encode_prompt(PROMPT), again.encode_prompt(PROMPT))
    assert again.scheduler_config["_class_name"] == "PNDMScheduler"
    assert again.noise_scheduler.config.clip_sample is False  # latents are never clipped to [-1, 1]


def test_single_file_needs_config(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"not really")
    with pytest.raises(ModelLoadError, match="config="):
        load_model(f)


def test_missing_sources_give_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "absent.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="model_index.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model("someone/not-a-cached-model")


def test_device_and_dtype(tiny_model):
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type in ("cuda", "mps", "cpu")
    m = build_tiny().to(dtype=torch.bfloat16)
    assert m.dtype == torch.bfloat16 and next(m.vae.parameters()).dtype == torch.bfloat16
    m = build_tiny().to(dtype=torch.float16)
    assert m.dtype == torch.float16 and next(m.vae.parameters()).dtype == torch.float32  # VAE never fp16

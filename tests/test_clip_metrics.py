"""CLIP-based metrics and the misalignment analysis on random-weight CLIP models of the real classes.

Numbers are meaningless with random weights; what is tested is the plumbing, the conversion of
OpenAI-format checkpoints, the LIQE bookkeeping, and that missing weights raise instead of scoring.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from cloakbench.metrics import create_metric
from cloakbench.metrics.iqa import LIQE, liqe_prompts
from cloakbench.models import ModelLoadError
from cloakbench.models import load_clip
from cloakbench.models.clip import Clip, build_tiny_clip, openai_to_hf
from cloakbench.weights import MissingWeightError


def hf_to_openai(model) -> dict[str, torch.Tensor]:
    """Inverse of the key map (test helper), to write an OpenAI-format checkpoint from a CLIPModel."""
    sd, out = model.state_dict(), {}
    for k, v in sd.items():
        m = re.match(r"(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)", k)
        if m:
            pre = ("visual." if m.group(1) == "vision" else "") + f"transformer.resblocks.{m.group(2)}."
            rest = m.group(3)
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                continue
            rest = (rest.replace("self_attn.out_proj", "attn.out_proj").replace("layer_norm1", "ln_1")
                    .replace("layer_norm2", "ln_2").replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj"))
            out[pre + rest] = v
            if rest == "ln_1.weight":
                base = k.rsplit(".layer_norm1.weight", 1)[0] + ".self_attn."
                for kind in ("weight", "bias"):
                    out[pre + f"attn.in_proj_{kind}"] = torch.cat([sd[base + f"{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")])
            continue
    names = {
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight", "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight", "vision_model.post_layernorm.bias": "visual.ln_post.bias",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias",
        "logit_scale": "logit_scale",
    }
    for hf, oa in names.items():
        out[oa] = sd[hf]
    out["visual.proj"] = sd["visual_projection.weight"].t()
    out["text_projection"] = sd["text_projection.weight"].t()
    return out


@pytest.fixture(scope="module")
def tiny_clip() -> Clip:
    return Clip(build_tiny_clip(seed=1), source="tiny")


def _images(n=2, size=256, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_openai_checkpoint_converts_to_identical_model(tmp_path, tiny_clip):
    ckpt = tmp_path / "liqe_tiny.pt"
    torch.save({"params": {f"clip_model.{k}": v.half() for k, v in hf_to_openai(tiny_clip.model).items()}}, ckpt)
    converted = openai_to_hf(torch.load(ckpt, weights_only=True))
    assert converted.config.vision_config.image_size == 224 and converted.config.text_config.num_hidden_layers == 2
    x = tiny_clip.preprocess(_images(1))
    a = tiny_clip.model.get_image_features(pixel_values=x)
    b = converted.get_image_features(pixel_values=x)
    a, b = getattr(a, "pooler_output", a), getattr(b, "pooler_output", b)
    assert torch.allclose(a, b, atol=2e-2)  # the checkpoint was stored in fp16, as LIQE's may be
    with pytest.raises(ValueError, match="OpenAI-format"):
        openai_to_hf({"foo": torch.zeros(1)})


def test_liqe_from_checkpoint_end_to_end(tmp_path, tiny_clip):
    ckpt = tmp_path / "LIQE.pt"
    torch.save(hf_to_openai(tiny_clip.model), ckpt)  # the authors' format: a plain state dict
    m = create_metric("liqe", weights=str(ckpt))
    assert len(liqe_prompts()) == 495 and liqe_prompts()[0] == "a photo of a animal with jpeg2000 compression artifacts, which is of bad quality"
    r = m(_images(2, 288))  # 288 px: 3 x 3 = 9 patches of 224 at stride 32
    assert m.patches(_images(1, 288)[0]).shape == (9, 3, 224, 224)
    assert m.patches(_images(1, 512)[0]).shape == (15, 3, 224, 224)  # 100 patches -> every 6th
    assert all(1.0 <= v <= 5.0 for v in r.per_image) and 0.0 <= r.details["scene_human_share"] <= 1.0
    p = m.probabilities(_images(1, 224))
    assert p.shape == (1, 5, 9, 11) and p.sum().item() == pytest.approx(1.0, abs=1e-5)
    single = LIQE(tiny_clip, multitask=False)
    assert single.probabilities(_images(1, 224)).shape == (1, 5)


def test_clip_iqac_and_q_from_folder(tmp_path, tiny_clip):
    folder = tmp_path / "clip"
    tiny_clip.model.save_pretrained(folder)
    tiny_clip.tokenizer.save_pretrained(folder)
    r = create_metric("clip_iqac", clip=str(folder))(_images(3))
    assert len(r.per_image) == 3 and all(-1.0 <= v <= 1.0 for v in r.per_image)
    ckpt = tmp_path / "LIQE.pt"
    torch.save(hf_to_openai(tiny_clip.model), ckpt)
    q = create_metric("q", liqe=str(ckpt), clip=str(folder))(_images(2))
    assert -1.0 <= q.value <= 1.0
    assert q.value == pytest.approx(0.5 * (2 * (q.details["liqe"] - 1) / 4 - 1) + 0.5 * q.details["clip_iqac"], abs=1e-6)


def test_missing_weights_raise_never_score():
    with pytest.raises(MissingWeightError, match="cloakbench weights fetch liqe-mix"):
        create_metric("liqe")
    with pytest.raises(ModelLoadError, match="not available"):
        create_metric("clip_iqac")
    with pytest.raises((MissingWeightError, ModelLoadError)):
        create_metric("q")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_clip("/nonexistent/clip")


def test_analysis_end_to_end(tmp_path, tiny_clip):
    from cloakbench.analysis import analyze

    clean = _images(5, 224, seed=1)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    s = analyze(tiny_clip, {"clean": clean, "protected": noisy, "purified": clean.flip(-1)}, tmp_path)
    g = s["groups"]
    assert set(g) == {"clean", "protected", "purified"} and "cos_to_paired_clean" in g["protected"]
    assert 0.0 <= g["protected"]["subject_rate"] <= 1.0 and -1 <= g["protected"]["cos_to_paired_clean"] <= 1
    for method in ("pca", "svd", "tsne"):
        assert (tmp_path / f"projection_{method}.png").stat().st_size > 1000
    assert json.loads((tmp_path / "misalignment.json").read_text())["groups"]["clean"]["n"] == 5

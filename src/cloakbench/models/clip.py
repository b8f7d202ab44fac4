"""CLIP for metrics and analysis: the :class:`Clip` wrapper (preprocessing, features), tiny test CLIPs,
and the OpenAI-format checkpoint conversion.

The CLIP model is configuration (default OpenAI ViT-B/32, the one MetaCloak's CLIP metrics and
LIQE use); :func:`cloakbench.models.loading.load_clip` loads it. Offline, an uncached hub id is a
clear error; no number is ever produced without weights.
OpenAI-format state dicts (the ``clip`` package's keys, as in LIQE checkpoints) are converted to
``transformers.CLIPModel`` by :func:`openai_to_hf`, with the architecture read from the tensors.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from .tokenizer import clip_tokenizer

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class Clip:
    """A ``CLIPModel`` with its tokenizer and the OpenAI preprocessing, on tensors in [0, 1]."""

    def __init__(self, model: CLIPModel, tokenizer=None, source: str = "") -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer or clip_tokenizer(model.config.text_config.max_position_embeddings)
        self.source = source
        self.image_size = int(model.config.vision_config.image_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` in [0, 1] -> normalised ``B x 3 x S x S``: shorter side to S (bicubic), center crop."""
        s = self.image_size
        h, w = images.shape[-2:]
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        x = F.interpolate(images.float(), size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - s) // 2, (nw - s) // 2
        x = x[:, :, top : top + s, left : left + s].clamp(0, 1)
        return self.normalize(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(OPENAI_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def image_features(self, images: torch.Tensor, *, preprocessed: bool = False, batch: int = 32) -> torch.Tensor:
        """L2-normalised image embeddings ``B x D`` (float32, on CPU)."""
        out = []
        for i in range(0, images.shape[0], batch):
            x = images[i : i + batch].to(self.device)
            x = x if preprocessed else self.preprocess(x)
            f = self.model.get_image_features(pixel_values=x.to(self.model.dtype))
            f = getattr(f, "pooler_output", f)
            out.append(F.normalize(f.float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``N x D`` (float32, on CPU)."""
        ids = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.model.config.text_config.max_position_embeddings,
                             return_tensors="pt").input_ids.to(self.device)
        f = self.model.get_text_features(input_ids=ids)
        f = getattr(f, "pooler_output", f)
        return F.normalize(f.float(), dim=-1).cpu()

    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())


def build_tiny_clip(seed: int = 0, image_size: int = 224, width: int = 64) -> CLIPModel:
    """Random-weight ``CLIPModel`` of the real class, small (tests: numbers meaningless, plumbing real)."""
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=width, intermediate_size=4 * width, num_attention_heads=max(1, width // 64),
                         num_hidden_layers=2, vocab_size=49408, max_position_embeddings=77,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=width, intermediate_size=4 * width, num_attention_heads=max(1, width // 64),
                           num_hidden_layers=2, image_size=image_size, patch_size=32, hidden_act="quick_gelu"),
        projection_dim=width,
    )
    return CLIPModel(cfg).eval()


# ----------------------------------------------------------------------------- OpenAI -> HF

def _layer_map(prefix_oa: str, prefix_hf: str, sd: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> int:
    n = 0
    pattern = re.compile(re.escape(prefix_oa) + r"(\d+)\.(.+)")
    for key, t in sd.items():
        m = pattern.fullmatch(key)
        if not m:
            continue
        i, rest = int(m.group(1)), m.group(2)
        n = max(n, i + 1)
        base = f"{prefix_hf}{i}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0)):
                out[f"{base}self_attn.{name}.{kind}"] = part
            continue
        rest = (rest.replace("attn.out_proj", "self_attn.out_proj").replace("ln_1", "layer_norm1")
                .replace("ln_2", "layer_norm2").replace("mlp.c_fc", "mlp.fc1").replace("mlp.c_proj", "mlp.fc2"))
        out[base + rest] = t
    return n


def openai_to_hf(sd: dict[str, torch.Tensor]) -> CLIPModel:
    """Build a ``CLIPModel`` from an OpenAI-format CLIP state dict (as the ``clip`` package saves it).

    Accepts pyiqa's wrapping (``{"params": {"clip_model.<key>": ...}}``) and ``module.`` prefixes.
    The architecture (widths, layers, patch, image size, context) is read from the tensor shapes;
    heads = width / 64 as in OpenAI's ``build_model``. Only ``visual.proj`` and ``text_projection``
    are transposed (``x @ P`` vs ``nn.Linear``); ``in_proj`` is split into q, k, v.
    """
    if "params" in sd and isinstance(sd["params"], dict):
        sd = sd["params"]
    sd = {re.sub(r"^(module\.)?(clip_model\.)?", "", k): v.float() for k, v in sd.items()}
    need = ("visual.conv1.weight", "token_embedding.weight", "text_projection", "visual.proj")
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"not an OpenAI-format CLIP state dict: missing {missing}")
    out: dict[str, torch.Tensor] = {}
    v_layers = _layer_map("visual.transformer.resblocks.", "vision_model.encoder.layers.", sd, out)
    t_layers = _layer_map("transformer.resblocks.", "text_model.encoder.layers.", sd, out)
    simple = {
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight", "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight", "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    for k, v in simple.items():
        out[v] = sd[k]
    out["visual_projection.weight"] = sd["visual.proj"].t().contiguous()
    out["text_projection.weight"] = sd["text_projection"].t().contiguous()

    v_width, _, patch, _ = sd["visual.conv1.weight"].shape
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    t_width = sd["token_embedding.weight"].shape[1]
    cfg = CLIPConfig(
        text_config=dict(hidden_size=t_width, intermediate_size=4 * t_width, num_attention_heads=max(1, t_width // 64),
                         num_hidden_layers=t_layers, vocab_size=sd["token_embedding.weight"].shape[0],
                         max_position_embeddings=sd["positional_embedding"].shape[0], bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=49407, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=v_width, intermediate_size=4 * v_width, num_attention_heads=max(1, v_width // 64),
                           num_hidden_layers=v_layers, image_size=grid * patch, patch_size=patch, hidden_act="quick_gelu"),
        projection_dim=sd["text_projection"].shape[1],
    )
    model = CLIPModel(cfg)
    result = model.load_state_dict(out, strict=False)
    unexpected = list(result.unexpected_keys)
    missing_keys = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if unexpected or missing_keys:
        raise ValueError(f"CLIP conversion mismatch: missing {missing_keys[:5]}, unexpected {unexpected[:5]}")
    return model.eval()

"""No-reference quality: BRISQUE, LIQE, CLIP-IQAC, and the paper's Q, Avg and E[Avg].

Definitions from docs/METRICS.md §4. Every CLIP-based score needs real CLIP / LIQE weights; without them
the constructor raises the missing-weight or model-load error, never a made-up number.
"""

from __future__ import annotations

import functools
import itertools
import os
import types

import numpy as np
import torch
import torch.nn.functional as F

from ..images import to_uint8
from ..models.clip import DEFAULT_CLIP, Clip, openai_to_hf
from ..models.loading import load_clip
from .base import Metric, MetricResult, nanmean, register_metric


@register_metric
class Brisque(Metric):
    """BRISQUE with the ``brisque`` package's LIVE-trained SVR (Anti-DreamBooth's variant: full size).

    Labelled ``brisque[pkg]``: the piq (256 px) and PID variants give incomparable numbers
    (docs/METRICS.md §4). Lower is better quality. The package's features are 1-element arrays that
    ``float()`` rejects under numpy >= 2.4; the fix is applied to this instance only.
    """

    name = "brisque"
    reference = "VinAIResearch/Anti-DreamBooth evaluations/brisque.py"
    requires = ("brisque", "cv2")  # brisque imports cv2 without declaring it
    higher_better = False
    value_range = (0.0, 150.0)
    licence = "Apache-2.0 (brisque package and model)"

    def __init__(self, backend: str = "pkg") -> None:
        if backend != "pkg":
            raise ValueError("only the offline brisque package variant ('pkg') is implemented")
        self.backend = "pkg"
        self._model = _brisque_model()

    def score(self, image_uint8: np.ndarray) -> float:
        return float(self._model.score(image_uint8))

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        per = [self.score(a) for a in to_uint8(images)]
        return self.result(nanmean(per), per)


@functools.lru_cache(maxsize=1)
def _brisque_model():
    try:
        from brisque import BRISQUE
    except ImportError as exc:
        raise ImportError(f"BRISQUE needs `pip install 'cloakbench[iqa]'` ({exc})") from exc
    model = BRISQUE(url=False)
    original = model.calculate_brisque_features  # bound method of this instance only

    def features(self, *args, **kwargs):
        return np.array([np.asarray(f, dtype=float).item() for f in original(*args, **kwargs)], dtype=float)

    model.calculate_brisque_features = types.MethodType(features, model)
    return model


def good_bad_score(clip: Clip, images: torch.Tensor, prompts: list[str], scale: float) -> torch.Tensor:
    """``p_good - p_bad`` per image in [-1, 1]: ``softmax(scale * cos(image, prompt))`` over the two
    ``prompts`` (good first); images ``B x 3 x H x W`` in [0, 1]."""
    p = (scale * clip.image_features(images) @ clip.text_features(prompts).T).softmax(-1)
    return p[:, 0] - p[:, 1]


@register_metric
class ClipIQAC(Metric):
    """CLIP_IQAC (MetaCloak ``CLIP_IQAC_get_score``): ``p_good - p_bad`` in [-1, 1].

    ``softmax(100 * cos(image, text))`` over ["a good photo of {cls}", "a bad photo of {cls}"],
    with OpenAI CLIP ViT-B/32 and ``cls = "face"`` for the class "person" (as MetaCloak does). The 100 is
    OpenAI CLIP's learned logit scale; ``clip_iqac[mini]`` uses the mini CLIP's own (about 16): at 100 its
    wider cosine spread saturates most scores to exactly +-1, so a mean over a few samples takes a
    handful of values.
    """

    name = "clip_iqac"
    reference = "liuyixin-louis/MetaCloak robust_facecloak/eval_score.py"  # CLIP_IQAC_get_score
    higher_better = True
    value_range = (-1.0, 1.0)
    licence = "CLIP weights: MIT (OpenAI)"

    def __init__(self, clip: str | Clip = DEFAULT_CLIP, subject: str = "face", scale: float | None = None,
                 device: str | None = None, backend: str | None = None) -> None:
        if backend == "mini":  # ``clip_iqac[mini]``: the mini CLIP and its world's class word
            clip, subject = "mini", "a toy"
        elif backend not in (None, "clip"):
            raise ValueError(f"clip_iqac backend must be 'clip' or 'mini', got {backend!r}")
        self.clip = load_clip(clip, device=device)
        self.prompts = [f"a good photo of {subject}", f"a bad photo of {subject}"]
        self.scale = scale if scale is not None else self.clip.logit_scale() if backend == "mini" else 100.0
        self.backend = backend or "clip"

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        per = good_bad_score(self.clip, images, self.prompts, self.scale).tolist()
        return self.result(nanmean(per), per, details={"prompts": self.prompts, "clip": self.clip.source,
                                                             "scale": self.scale})


@register_metric
class ClipStyle(Metric):
    """Style similarity for style mimicry (the paper's art case; Glaze / Mist evaluate mimicry the same
    way): mean cosine between the CLIP image embedding of each generated image and the centroid of the
    reference paintings' embeddings, in [-1, 1]. ``clip_style[mini]`` uses the mini CLIP."""

    name = "clip_style"
    higher_better = True
    value_range = (-1.0, 1.0)
    needs_reference = True
    licence = "CLIP weights: MIT (OpenAI)"

    def __init__(self, clip: str | Clip = DEFAULT_CLIP, device: str | None = None, backend: str | None = None) -> None:
        if backend == "mini":
            clip = "mini"
        elif backend not in (None, "clip"):
            raise ValueError(f"clip_style backend must be 'clip' or 'mini', got {backend!r}")
        self.clip = load_clip(clip, device=device)
        self.backend = backend or "clip"

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        centroid = torch.nn.functional.normalize(self.clip.image_features(references).mean(0), dim=0)
        per = (self.clip.image_features(images) @ centroid).tolist()
        return self.result(nanmean(per), per, details={"clip": self.clip.source, "references": int(references.shape[0])})


# LIQE (Zhang et al., CVPR 2023): the multitask prompts over quality x scene x distortion.
LIQE_QUALITIES = ["bad", "poor", "fair", "good", "perfect"]
LIQE_SCENES = ["animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others"]
LIQE_DISTORTIONS = ["jpeg2000 compression", "jpeg compression", "noise", "blur", "color", "contrast",
                    "overexposure", "underexposure", "spatial", "quantization", "other"]


def liqe_prompts(multitask: bool = True) -> list[str]:
    """The 495 joint prompts (quality outermost, distortion innermost) or the 5 single-task ones."""
    if not multitask:
        return [f"a photo with {q} quality" for q in LIQE_QUALITIES]
    return [f"a photo of a {s} with {d} artifacts, which is of {q} quality"
            for q, s, d in itertools.product(LIQE_QUALITIES, LIQE_SCENES, LIQE_DISTORTIONS)]


@register_metric
class LIQE(Metric):
    """LIQE quality in [1, 5] (Zhang et al., CVPR 2023; used by MetaCloak and this paper).

    Our own scorer over a ``transformers.CLIPModel``: 224-px patches with stride 32 (no resizing,
    as the authors' ``LIQE.py`` MetaCloak vendors), ``num_patch = 15`` patches taken every
    ``N // 15`` (all of them when fewer), logits ``exp(logit_scale) * cos`` averaged over patches,
    softmax over the 495 joint prompts, marginalised over scene and distortion to ``p_k``;
    ``LIQE = sum_k k * p_k``. Images smaller than 224 px are upsampled (bicubic) to 224 first.

    ``weights``: a name of the weights manager (``liqe-mix``, the authors' multitask model;
    ``liqe-koniq``, pyiqa's single-task KonIQ model), a checkpoint path, or a ready ``Clip``.
    ``details`` carries the share of images whose argmax scene is "human" (LIQE_Scene_Human).
    """

    name = "liqe"
    reference = "liuyixin-louis/MetaCloak LIQE/LIQE.py"
    higher_better = True
    value_range = (1.0, 5.0)
    licence = "LIQE code MIT; weights CC-BY-NC-SA-4.0 (pyiqa release)"

    def __init__(self, weights: str | os.PathLike[str] | Clip = "liqe-mix", multitask: bool | None = None,
                 num_patch: int = 15, step: int = 32, device: str | None = None) -> None:
        if isinstance(weights, Clip):
            self.clip = weights
            source = weights.source
        else:
            from .. import weights as wm

            text = str(weights)
            path = wm.resolve(text) if text in {s.name for s in wm.list_specs()} else os.fspath(weights)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"LIQE checkpoint {path} does not exist")
            from ..models.device import pick_device
            from ..safe_tensors import read_state_dict

            state = read_state_dict(path)  # tensors only: TorchScript or pickled code refused by content

            self.clip = Clip(openai_to_hf(state).to(pick_device(device)), source=str(path))
            source = str(path)
        self.multitask = (str(weights) != "liqe-koniq") if multitask is None else multitask
        self.prompts = liqe_prompts(self.multitask)
        self.num_patch, self.step, self.backend = num_patch, step, "clip"
        self.source = source
        self._text = None

    def patches(self, image: torch.Tensor) -> torch.Tensor:
        """One image ``3 x H x W`` in [0, 1] -> the selected normalised patches ``P x 3 x 224 x 224``."""
        s = self.clip.image_size
        x = image[None].float()
        if min(x.shape[-2:]) < s:
            h, w = x.shape[-2:]
            k = s / min(h, w)
            x = F.interpolate(x, size=(max(s, round(h * k)), max(s, round(w * k))), mode="bicubic",
                              align_corners=False).clamp(0, 1)
        x = self.clip.normalize(x)
        p = x.unfold(2, s, self.step).unfold(3, s, self.step)  # 1 x 3 x nh x nw x s x s
        p = p.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, s, s)  # row-major patches
        n = p.shape[0]
        if n > self.num_patch:
            p = p[torch.arange(self.num_patch) * (n // self.num_patch)]
        return p

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 5 x 9 x 11`` joint probabilities (``B x 5`` for the single-task model)."""
        if self._text is None:
            self._text = self.clip.text_features(self.prompts)
        scale = self.clip.logit_scale()
        out = []
        for img in images:
            feats = self.clip.image_features(self.patches(img), preprocessed=True)
            logits = (scale * feats @ self._text.T).mean(0)  # average logits over patches
            out.append(logits.softmax(-1))
        p = torch.stack(out)
        shape = (-1, len(LIQE_QUALITIES), len(LIQE_SCENES), len(LIQE_DISTORTIONS)) if self.multitask else (-1, 5)
        return p.view(*shape)

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        p = self.probabilities(images)
        pq = p.sum((2, 3)) if self.multitask else p
        per = (pq * torch.arange(1, 6, dtype=pq.dtype)).sum(1).tolist()
        details = {"weights": self.source, "multitask": self.multitask}
        if self.multitask:
            scene = p.sum((1, 3)).argmax(1)
            details["scene_human_share"] = float((scene == LIQE_SCENES.index("human")).float().mean())
        return self.result(nanmean(per), per, details=details)


def liqe_prime(liqe: float) -> float:
    """LIQE' = 2 (LIQE - 1) / 4 - 1: maps [1, 5] to [-1, 1] (DiffShortcut)."""
    return 2.0 * (liqe - 1.0) / 4.0 - 1.0


def q_score(liqe: float, clip_iqac: float) -> float:
    """The paper's quality score Q = LIQE' / 2 + CLIP_IQAC / 2, in [-1, 1]."""
    return 0.5 * liqe_prime(liqe) + 0.5 * clip_iqac


def avg_score(ims: float, q: float) -> float:
    """The paper's overall score Avg = (IMS + Q) / 2."""
    return 0.5 * (ims + q)


def expected_avg(avg_attacked: float, avg_not_attacked: float, p_attack: float = 0.5) -> float:
    """E[Avg] = P(AA) Avg_attacked + (1 - P(AA)) Avg_not_attacked (the paper uses P(AA) = 0.5)."""
    if not 0.0 <= p_attack <= 1.0:
        raise ValueError(f"P(AA) must be in [0, 1], got {p_attack}")
    return p_attack * avg_attacked + (1.0 - p_attack) * avg_not_attacked


@register_metric
class Q(Metric):
    """The paper's Q per image: ``LIQE'/2 + CLIP_IQAC/2``; both parts are reported in ``details``."""

    name = "q"
    reference = "liuyixin-louis/DiffShortcut diffshortcut/get_score_tempalte.py"
    higher_better = True
    value_range = (-1.0, 1.0)

    def __init__(self, liqe: str | os.PathLike[str] | Clip = "liqe-mix", clip: str | Clip = DEFAULT_CLIP,
                 device: str | None = None) -> None:
        self.liqe = LIQE(liqe, device=device)
        self.iqac = ClipIQAC(clip, device=device)
        self.backend = "clip"

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        a, b = self.liqe(images), self.iqac(images)
        per = [q_score(x, y) for x, y in zip(a.per_image, b.per_image)]
        return self.result(nanmean(per), per, details={"liqe": a.value, "clip_iqac": b.value})


@register_metric
class Avg(Metric):
    """The paper's overall score per image, ``Avg = (IMS + Q) / 2`` (DiffShortcut ``get_score_tempalte.py``,
    ``overall_score = 0.5 * IMS + 0.5 * Q``; docs/METRICS.md §4). ``avg[B]`` uses ``ims[B]`` (``avg[paper]``:
    ArcFace IP + VGG-Face 0.0.79) and ``q``. Next to ``ims[B]`` and ``q`` in one evaluation, the evaluate
    stage combines their per-image values (:meth:`combine`) instead of computing them again."""

    name = "avg"
    reference = "liuyixin-louis/DiffShortcut diffshortcut/get_score_tempalte.py"
    requires = ("insightface", "onnxruntime", "h5py", "cv2")  # backend="paper": ims[insightface+vggface]
    higher_better = True
    value_range = (-1.0, 1.0)
    needs_reference = True

    def __init__(self, backend: str = "paper", device: str | None = None, **q_kw) -> None:
        self.ims_name = f"ims[{backend}]"
        self._backend, self._device, self._q_kw = backend, device, q_kw
        self.backend = backend

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        from .identity import IMS

        return self.combine(IMS(backend=self._backend)(images, references), Q(device=self._device, **self._q_kw)(images, None))

    def combine(self, ims: MetricResult, q: MetricResult) -> MetricResult:
        """Avg from an IMS and a Q result on the same images (same order); None where either is None."""
        if len(ims.per_image) != len(q.per_image):
            raise ValueError(f"avg: IMS has {len(ims.per_image)} images, Q {len(q.per_image)}")
        per = [None if a is None or b is None else avg_score(a, b) for a, b in zip(ims.per_image, q.per_image)]
        return self.result(nanmean(per), per, details={"ims": ims.value, "q": q.value, "ims_backend": ims.backend})

"""Latent-misalignment analysis (arXiv 2406.18944 §3; docs/PAPER.md §2-3, measurements M1 and M2).

The paper's hypothesis: protective perturbations move images away from their prompt's concept in
CLIP space (toward "noise"), so fine-tuning binds the identifier to the noise pattern. Measured here:

* **M1 concept rates**: zero-shot CLIP over {"a photo of a person", "a photo of noise pattern"}
  (configurable), ``softmax(100 * cos)``: share of images classified as the subject and mean
  ``p(subject)``, plus the threshold-free mean cosine gap ``cos(img, subject) - cos(img, noise)``.
* **Embedding shift**: cosine of each image's embedding to its paired clean image (when the sets are
  paired) and to the clean centroid.
* **Image-prompt alignment**: mean ``cos(image, prompt)`` for the training prompt.
* **M2 projections**: PCA, truncated SVD and t-SNE (scikit-learn) of all embeddings, coloured by group,
  saved as PNG.

The CLIP model is configuration (default OpenAI ViT-B/32, as the authors' other CLIP metrics).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import protocol
from ..models.clip import Clip

log = logging.getLogger(__name__)

DEFAULT_CONCEPTS = ("a photo of a person", "a photo of noise pattern")


def concept_rates(clip: Clip, feats: torch.Tensor, concepts: Sequence[str] = DEFAULT_CONCEPTS,
                  scale: float = 100.0) -> dict[str, float]:
    """M1 on L2-normalised image features ``B x D``: the first concept is the subject."""
    text = clip.text_features(list(concepts))
    cos = feats @ text.T
    p = (scale * cos).softmax(-1)
    return {
        "subject_rate": float((p.argmax(-1) == 0).float().mean()),
        "p_subject": float(p[:, 0].mean()),
        "cos_gap": float((cos[:, 0] - cos[:, 1:].max(-1).values).mean()),
    }


def embedding_shift(feats: torch.Tensor, clean: torch.Tensor) -> dict[str, float | None]:
    """Cosine to the paired clean image (None if the sets differ in size) and to the clean centroid."""
    centroid = torch.nn.functional.normalize(clean.mean(0), dim=0)
    paired = float((feats * clean).sum(-1).mean()) if feats.shape == clean.shape else None
    return {"cos_to_paired_clean": paired, "cos_to_clean_centroid": float((feats @ centroid).mean())}


def project(feats: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """2-D projection ``N x 2`` of ``N x D`` features with ``pca``, ``svd`` (truncated SVD) or ``tsne``."""
    try:
        from sklearn.decomposition import PCA, TruncatedSVD
        from sklearn.manifold import TSNE
    except ImportError as exc:
        raise ImportError(f"projections need `pip install 'cloakbench[analysis]'` ({exc})") from exc
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(feats)
    if method == "svd":
        return TruncatedSVD(n_components=2, random_state=seed).fit_transform(feats)
    if method == "tsne":
        perplexity = float(max(2.0, min(30.0, (feats.shape[0] - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(feats)
    raise ValueError(f"projection method must be pca, svd or tsne, not {method!r}")


def plot_projection(points: np.ndarray, groups: list[str], out: Path, title: str) -> Path:
    """Scatter plot of ``N x 2`` points coloured by group, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=120)
    for g in dict.fromkeys(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        ax.scatter(points[idx, 0], points[idx, 1], s=18, label=f"{g} ({len(idx)})", alpha=0.8)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def analyze(
    clip: Clip,
    sets: Mapping[str, torch.Tensor],
    out_dir: str | Path | None = None,
    *,
    clean: str | None = None,
    concepts: Sequence[str] = DEFAULT_CONCEPTS,
    prompt: str = protocol.INSTANCE_PROMPT,
    projections: Sequence[str] = ("pca", "svd", "tsne"),
    seed: int = 0,
) -> dict[str, Any]:
    """Run M1, the embedding shift, prompt alignment and M2 on named image sets (``B x 3 x H x W`` in [0, 1]).

    ``clean`` names the reference set for shifts (default: the first). With ``out_dir`` it writes
    ``misalignment.json`` and one ``projection_<method>.png`` per method. Returns the summary.
    """
    if not sets:
        raise ValueError("analyze needs at least one image set")
    names = list(sets)
    clean = clean or names[0]
    if clean not in sets:
        raise KeyError(f"clean set {clean!r} is not among {names}")
    feats = {name: clip.image_features(images) for name, images in sets.items()}
    prompt_feat = clip.text_features([prompt])[0]
    summary: dict[str, Any] = {"clip": clip.source, "concepts": list(concepts), "prompt": prompt, "clean": clean,
                               "groups": {}}
    for name, f in feats.items():
        row = {"n": int(f.shape[0]), **concept_rates(clip, f, concepts),
               "prompt_alignment": float((f @ prompt_feat).mean())}
        if name != clean:
            row.update(embedding_shift(f, feats[clean]))
        summary["groups"][name] = row
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        all_feats = torch.cat(list(feats.values())).numpy()
        groups = [name for name, f in feats.items() for _ in range(f.shape[0])]
        summary["plots"] = {}
        for method in projections:
            if all_feats.shape[0] < 3:
                log.warning("too few images (%d) for a %s projection", all_feats.shape[0], method)
                continue
            pts = project(all_feats, method, seed)
            path = plot_projection(pts, groups, out / f"projection_{method}.png", f"CLIP image embeddings ({method})")
            summary["plots"][method] = path.name
        (out / "misalignment.json").write_text(json.dumps(summary, indent=2))
    return summary

"""Face-backend calibration on labelled pairs: ROC AUC, equal-error rate, best threshold.

A pairs file is a CSV with ``file_x, file_y, Decision`` (Yes = same person), as deepface's test set
(``shared/data/faces/labelled/pairs.csv``). Similarity is the negated distance of the backend's
verification metric, so a higher score means "same person".
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..images import read_rgb
from .face_backends import FaceBackend, create_face_backend


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties counting 1/2.

    Mann-Whitney form with average ranks for ties: O(n log n), so it takes the 165,600 pairs of the
    mini stack's validation as easily as a few hundred labelled face pairs."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both positive and negative pairs")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2  # 1-based average rank of each distinct score
    rank_sum = mean_rank[inverse.reshape(-1)][labels].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(EER, threshold t): accepting ``score >= t``, the cut point among the distinct scores where the
    false-accept and false-reject rates are closest (the lowest such t); EER is their mean there.

    One sorted sweep, O(n log n): per distinct score, the negatives at or above it and the positives
    below it come from cumulative counts."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the equal-error rate needs both positive and negative pairs")
    cuts, inverse = np.unique(scores, return_inverse=True)
    inverse = inverse.reshape(-1)
    pos = np.bincount(inverse[labels], minlength=len(cuts))
    neg = np.bincount(inverse[~labels], minlength=len(cuts))
    frr = (np.cumsum(pos) - pos) / n_pos  # positives strictly below each cut
    far = (n_neg - (np.cumsum(neg) - neg)) / n_neg  # negatives at or above it
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2), float(cuts[k])


@dataclass
class Calibration:
    backend: str
    n_pairs: int
    n_same: int
    skipped_pairs: int
    images_without_face: list[str]
    auc: float
    eer: float
    eer_distance: float
    threshold: float
    accuracy_at_threshold: float

    def summary(self) -> str:
        return (f"{self.backend}: ROC AUC {self.auc:.4f}, EER {self.eer:.4f} at distance {self.eer_distance:.3f}; "
                f"accuracy {self.accuracy_at_threshold:.4f} at the backend threshold {self.threshold} "
                f"({self.n_pairs} pairs, {self.n_same} same; {self.skipped_pairs} skipped for "
                f"{len(self.images_without_face)} images without a face)")


def calibrate(pairs_csv: str | Path, backend: str | FaceBackend = "dlib") -> Calibration:
    """Embed every image of ``pairs_csv`` (paths relative to its folder) and score the labelled pairs."""
    pairs_csv = Path(pairs_csv)
    face = create_face_backend(backend)
    rows = list(csv.DictReader(pairs_csv.open()))
    missing = [k for k in ("file_x", "file_y", "Decision") if rows and k not in rows[0]]
    if not rows or missing:
        raise ValueError(f"{pairs_csv}: needs columns file_x, file_y, Decision (missing {missing or 'rows'})")
    embs: dict[str, np.ndarray | None] = {}
    for name in sorted({r["file_x"] for r in rows} | {r["file_y"] for r in rows}):
        arr = (read_rgb(pairs_csv.parent / name, min_size=None) * 255.0).round().astype(np.uint8)
        faces = face.faces(arr)
        embs[name] = faces[0].embedding if faces else None
    dist, same, skipped = [], [], 0
    for r in rows:
        a, b = embs[r["file_x"]], embs[r["file_y"]]
        if a is None or b is None:
            skipped += 1
            continue
        dist.append(face.dist(a, b))
        same.append(r["Decision"].strip().lower() in ("yes", "1", "true", "same"))
    d, y = np.array(dist), np.array(same)
    eer, t = equal_error_rate(-d, y)
    acc = float(((d <= face.threshold) == y).mean())
    return Calibration(face.name, len(d), int(y.sum()), skipped, sorted(k for k, v in embs.items() if v is None),
                       roc_auc(-d, y), eer, -t, face.threshold, acc)

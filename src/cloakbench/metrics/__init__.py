"""Metrics: identity (ISM, FDFR, IMS), quality (BRISQUE, LIQE, CLIP-IQAC, Q), fidelity, budget.

``create_metric("ism[dlib]")`` builds a metric; ``list_metrics()`` names them all; each result
carries its direction, backend and per-image values (docs/METRICS.md has the exact definitions).
"""

from . import fidelity, identity, iqa  # noqa: F401  (register the metrics)
from .base import METRICS, Metric, MetricResult, create_metric, list_metrics, mean_std, nanmean, sign_flip_test, wilcoxon
from .face_backends import FACE_BACKENDS, FaceBackend, create_face_backend
from .iqa import avg_score, expected_avg, liqe_prime, q_score

__all__ = ["FACE_BACKENDS", "METRICS", "FaceBackend", "Metric", "MetricResult", "avg_score", "create_face_backend",
           "create_metric", "expected_avg", "list_metrics", "liqe_prime", "mean_std", "nanmean", "q_score", "sign_flip_test", "wilcoxon"]

"""Identity metrics: ISM, FDFR, IMS (and its two parts) and the subject detection score.

Definitions follow docs/METRICS.md §2 exactly; every result is labelled with its face backend
(``ism[dlib]`` is our offline substitute and is never comparable with the ArcFace numbers of the
papers). ``G`` = generated (or evaluated) images, ``R`` = clean references of the same identity.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict

import numpy as np
import torch

from ..images import to_uint8
from .base import Metric, MetricResult, nanmean, register_metric
from .face_backends import Face, FaceBackend, cosine, create_face_backend

log = logging.getLogger(__name__)

_CACHE: OrderedDict[tuple[str, str], list[Face]] = OrderedDict()
_CACHE_SIZE = 512


def detect_all(backend: FaceBackend, images: torch.Tensor) -> list[list[Face]]:
    """Faces per image (largest first), memoised by image content, so metrics share one pass."""
    out = []
    config = f"{type(backend).__name__}:{sorted((k, v) for k, v in vars(backend).items() if isinstance(v, (int, float, str)))}"
    for arr in to_uint8(images):
        key = (config, hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest())
        if key not in _CACHE:
            _CACHE[key] = backend.faces(arr)
            if len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        out.append(_CACHE[key])
    return out


def reference_embeddings(backend: FaceBackend, references: torch.Tensor) -> tuple[list[np.ndarray], int]:
    """Largest-face embedding of each reference with a face, and how many references had none."""
    embs, missing = [], 0
    for faces in detect_all(backend, references):
        if faces:
            embs.append(faces[0].embedding)
        else:
            missing += 1
    if not embs:
        raise ValueError(f"no face found in any of the {references.shape[0]} reference images ({backend.name})")
    return embs, missing


PENALTIES = {"-1": -1.0, "minus_one": -1.0, "0": 0.0, "zero": 0.0, "skip": None}


def _penalty(policy: str) -> float | None:
    if policy not in PENALTIES:
        raise ValueError(f"no-face policy must be one of {sorted(PENALTIES)}, not {policy!r}")
    return PENALTIES[policy]


class _FaceMetric(Metric):
    needs_face = True
    requires = ("dlib", "face_recognition_models")  # the default backend, dlib (face_backends.DlibFaces)

    def __init__(self, backend: str | FaceBackend = "dlib", **backend_kw) -> None:
        self.face = create_face_backend(backend, **backend_kw)
        self.backend = self.face.name
        self.licence = self.face.licence


@register_metric
class ISM(_FaceMetric):
    """Identity Score Matching (Anti-DreamBooth, ``evaluations/ism_fdfr.py``).

    ``e_bar`` = mean embedding of the references' largest faces (references without a face are left
    out; Anti-DreamBooth still counts them in the divisor, which only rescales ``e_bar`` and leaves
    the cosine unchanged). Per image with a face: ``cos(e(g), e_bar)`` of its largest face.
    ``ISM = mean over images with a face``. Images without a face are skipped (``no_face="skip"``,
    the reference behaviour, which lets a high FDFR *raise* ISM: always report FDFR with it), or
    scored 0 / -1. When no image has a face, ``empty="skip"`` gives None (Anti-DreamBooth drops the
    subject) and ``empty="zero"`` gives 0 (DisDiff's copy).
    """

    name = "ism"
    reference = "VinAIResearch/Anti-DreamBooth evaluations/ism_fdfr.py"
    higher_better = True
    value_range = (-1.0, 1.0)
    needs_reference = True

    def __init__(self, backend: str | FaceBackend = "dlib", no_face: str = "skip", empty: str = "skip", **kw) -> None:
        super().__init__(backend, **kw)
        self.no_face, self.empty = _penalty(no_face), empty
        if empty not in ("skip", "zero"):
            raise ValueError(f"empty must be 'skip' or 'zero', not {empty!r}")

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        assert references is not None
        refs, ref_missing = reference_embeddings(self.face, references)
        e_bar = np.mean(refs, axis=0)
        found = detect_all(self.face, images)
        per: list[float | None] = [cosine(f[0].embedding, e_bar) if f else self.no_face for f in found]
        n_no_face = sum(1 for f in found if not f)
        value = nanmean(per)
        if value is None and self.empty == "zero":
            value = 0.0
        return self.result(value, per, n_no_face=n_no_face,
                           details={"references_without_face": ref_missing, "backend_version": self.face.version()})


@register_metric
class FDFR(_FaceMetric):
    """Face Detection Failure Rate (Anti-DreamBooth): share of images where the detector finds no face.

    Only detector misses count (files are validated on loading, so unreadable files never count as
    misses). FDFR is defined relative to its detector: the label names it.
    """

    name = "fdfr"
    reference = "VinAIResearch/Anti-DreamBooth evaluations/ism_fdfr.py"
    higher_better = False
    value_range = (0.0, 1.0)

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        per = [0.0 if faces else 1.0 for faces in detect_all(self.face, images)]
        return self.result(float(np.mean(per)), per, n_no_face=int(sum(per)),
                           details={"backend_version": self.face.version()})


@register_metric
class Verified(_FaceMetric):
    """Verification rate: the share of images verified as the subject by the identity encoder.

    Per image: its largest face's mean distance to the references' embeddings, verified when at or below
    the backend's threshold (the mini encoder's: its equal-error rate on held-out subjects); an image
    without a face is not verified. Unlike ISM it counts every image (FDFR cannot raise it) and reads as
    "how many samples show the subject", the quantity a protection wants to push to 0.
    """

    name = "verified"
    higher_better = True
    value_range = (0.0, 1.0)
    needs_reference = True

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        assert references is not None
        refs, ref_missing = reference_embeddings(self.face, references)
        found = detect_all(self.face, images)
        dist = [float(np.mean([self.face.dist(f[0].embedding, r) for r in refs])) if f else None for f in found]
        per = [float(d is not None and d <= self.face.threshold) for d in dist]
        return self.result(float(np.mean(per)), per, n_no_face=sum(d is None for d in dist), details={
            "threshold": self.face.threshold, "distance": self.face.distance, "mean_distance": nanmean(dist),
            "references_without_face": ref_missing, "backend_version": self.face.version()})


def reference_rows(face: FaceBackend, references: torch.Tensor) -> tuple[list[np.ndarray], int]:
    """The thresholded part's reference set, as deepface ``find`` builds it, and how many had no face.

    Every detected face of every reference is one row (MetaCloak ``generic/modi_deepface.py:495-522``);
    a reference without a face contributes its whole image (``enforce_detection=False``, deepface 0.0.79
    ``commons/functions.py:120-121``). Backends that cannot embed a whole image skip it.
    """
    rows, missing = [], 0
    for arr, faces in zip(to_uint8(references), detect_all(face, references)):
        if faces:
            rows += [f.embedding for f in faces]
            continue
        missing += 1
        try:
            rows.append(face.embed_whole(arr))
        except ValueError:
            pass
    if not rows:
        raise ValueError(f"no usable reference among the {references.shape[0]} images ({face.name})")
    return rows, missing


def thresholded_scores(face: FaceBackend, images: torch.Tensor, refs: list[np.ndarray]) -> list[dict]:
    """IMS_VGG per image (MetaCloak ``robust_facecloak/eval_score.py:185-195``).

    The image's first face (``dfs[0]``: deepface's first, i.e. OpenCV's order on ``vggface``; the
    largest on the other backends), or the whole image without a face (``enforce_detection=False``).
    Its distance to every reference row; rows with ``d <= tau`` are kept (``modi_deepface.py:591-593``;
    a NaN distance is dropped, ``eval_score.py:189``). Score = 1 - mean(kept) if any row is kept, else
    1 - 2 = -1 (``eval_score.py:190-195``).
    """
    rows = []
    for arr, faces in zip(to_uint8(images), detect_all(face, images)):
        emb = faces[0].embedding if faces else face.embed_whole(arr)
        d = np.array([face.dist(emb, r) for r in refs])
        kept = d[d <= face.threshold]  # NaN compares False: dropped as in the reference
        rows.append({"score": float(1.0 - kept.mean()) if kept.size else -1.0, "verified": bool(kept.size),
                     "has_face": bool(faces)})
    return rows


@register_metric
class IMSThresholded(_FaceMetric):
    """The thresholded identity part of IMS (MetaCloak's IMS_VGG), on the chosen backend.

    Per image ``g``: ``d_r`` = distance of ``e(g)`` to each reference ``r``; keep ``d_r <= tau``;
    ``score(g) = 1 - mean(kept d_r)`` if any is kept, else ``-1``. The aggregate is the mean over G.
    References: every face of every reference, whole image when none (:func:`reference_rows`).
    On ``vggface`` (deepface 0.0.79 VGG-Face, cosine, tau 0.40) this is MetaCloak's metric; on
    ``dlib`` it is our construction: L2 distance, tau = 0.6, so verified scores lie in [0.4, 1];
    ``deepface`` uses the installed release (``deepface-4096d``: tau 0.68, another model).
    The distribution is bimodal ({-1} and the verified band): the verification rate and the mean
    score of verified images are reported in ``details`` and are the numbers to read first.
    """

    name = "ims_vgg"
    reference = "liuyixin-louis/MetaCloak robust_facecloak/eval_score.py"  # IMS_get_score
    higher_better = True
    value_range = (-1.0, 1.0)
    needs_reference = True

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        assert references is not None
        refs, ref_missing = reference_rows(self.face, references)
        rows = thresholded_scores(self.face, images, refs)
        per = [r["score"] for r in rows]
        verified = [r["score"] for r in rows if r["verified"]]
        return self.result(nanmean(per), per, n_no_face=sum(not r["has_face"] for r in rows), details={
            "verification_rate": len(verified) / len(rows), "verified_mean": nanmean(verified),
            "threshold": self.face.threshold, "distance": self.face.distance,
            "references_without_face": ref_missing, "backend_version": self.face.version()})


def ip_scores(face: FaceBackend, images: torch.Tensor, refs: list[np.ndarray], penalty: float | None) -> list[float | None]:
    """IMS_IP per image: mean cosine of the largest face to each reference; no face -> ``penalty``."""
    return [float(np.mean([cosine(faces[0].embedding, r) for r in refs])) if faces else penalty
            for faces in detect_all(face, images)]


@register_metric
class IMSIP(_FaceMetric):
    """The embedding part of IMS (this paper's IMS_IP; code not released, docs/METRICS.md §2).

    Per image: mean cosine similarity of its largest face's embedding to each reference embedding
    (InsightFace ``normed_embedding`` in the paper); no face -> ``no_face`` (-1 by default, as the
    thresholded part; 0 or skip are options since the paper's rule is unknown).
    """

    name = "ims_ip"
    higher_better = True
    value_range = (-1.0, 1.0)
    needs_reference = True

    def __init__(self, backend: str | FaceBackend = "dlib", no_face: str = "-1", **kw) -> None:
        super().__init__(backend, **kw)
        self.no_face = _penalty(no_face)

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        assert references is not None
        refs, ref_missing = reference_embeddings(self.face, references)
        per = ip_scores(self.face, images, refs, self.no_face)
        n_no_face = sum(1 for f in detect_all(self.face, images) if not f)
        return self.result(nanmean(per), per, n_no_face=n_no_face,
                           details={"references_without_face": ref_missing, "backend_version": self.face.version()})


@register_metric
class IMS(Metric):
    """The paper's identity score: ``IMS = lam * IMS_IP + (1 - lam) * IMS_VGG``, lam = 0.7.

    From DiffShortcut's ``get_score_tempalte.py:96``. The paper's parts are InsightFace (IP) and
    deepface 0.0.79 VGG-Face (thresholded, tau 0.40); ``backend="paper"`` (``ims[paper]``) is
    ``ip_backend="insightface", vgg_backend="vggface"`` (the torch port of that VGG-Face, labelled
    ``ims[insightface+vggface]``). ``backend="dlib"`` computes both parts on dlib embeddings with dlib's
    L2 threshold 0.6 and is labelled ``ims[dlib]`` (our substitute, not the paper's numbers). Per-image
    values are ``lam * ip(g) + (1 - lam) * thr(g)``; the aggregate is their mean (equal to combining
    the means while no image is skipped).
    """

    name = "ims"
    reference = "liuyixin-louis/DiffShortcut diffshortcut/get_score_tempalte.py"
    requires = _FaceMetric.requires  # backend="dlib"; "paper" needs those of Avg
    higher_better = True
    value_range = (-1.0, 1.0)
    needs_face = True
    needs_reference = True

    def __init__(self, backend: str = "dlib", ip_backend: str | None = None, vgg_backend: str | None = None,
                 lam: float = 0.7, no_face: str = "-1") -> None:
        if backend == "paper":
            ip_backend, vgg_backend = ip_backend or "insightface", vgg_backend or "vggface"
        self.ip = create_face_backend(ip_backend or backend)
        self.thr = self.ip if (vgg_backend or backend) == self.ip.name else create_face_backend(vgg_backend or backend)
        self.lam, self.no_face = float(lam), _penalty(no_face)
        self.backend = self.ip.name if self.ip is self.thr else f"{self.ip.name}+{self.thr.name}"

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        assert references is not None
        ip_refs, _ = reference_embeddings(self.ip, references)
        thr_refs = reference_rows(self.thr, references)[0]
        ip = ip_scores(self.ip, images, ip_refs, self.no_face)
        thr = thresholded_scores(self.thr, images, thr_refs)
        version = self.ip.version() if self.ip is self.thr else f"{self.ip.version()} | {self.thr.version()}"
        per = [None if a is None else self.lam * a + (1 - self.lam) * t["score"] for a, t in zip(ip, thr)]
        return self.result(nanmean(per), per, n_no_face=sum(not t["has_face"] for t in thr), details={
            "lam": self.lam, "ims_ip": nanmean(ip), "ims_vgg": nanmean([t["score"] for t in thr]),
            "verification_rate": float(np.mean([t["verified"] for t in thr])),
            "threshold": self.thr.threshold, "distance": self.thr.distance,
            "backend_version": version})


@register_metric
class DetectionScore(_FaceMetric):
    """Subject detection score (MetaCloak ``FDSR_get_score``; not the SDS protection).

    Per image: mean detector confidence of its faces, 0 when none. With dlib the confidences are the
    detector's raw scores (HOG SVM margin, MMOD score), not probabilities: compare only within a backend.
    """

    name = "detection_score"
    reference = "liuyixin-louis/MetaCloak robust_facecloak/eval_score.py"  # FDSR_get_score
    higher_better = True
    value_range = (-np.inf, np.inf)

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        faces_per = detect_all(self.face, images)
        per = [float(np.mean([f.confidence for f in faces])) if faces else 0.0 for faces in faces_per]
        return self.result(float(np.mean(per)), per, n_no_face=sum(not f for f in faces_per),
                           details={"backend_version": self.face.version()})

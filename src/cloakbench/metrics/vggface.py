"""deepface 0.0.79's VGG-Face (2622-d) in torch: the model, its Keras weights and its preprocessing.

The thresholded part of the paper's IMS is MetaCloak's ``IMS_get_score``
(``robust_facecloak/eval_score.py:185-195``), which runs deepface **0.0.79** (pinned in MetaCloak's and
DiffShortcut's ``requirement.txt:5``) through ``generic/modi_deepface.py::find_without_savepkl``. What
that code computes, and what this module reproduces (``deepface/...`` paths are in the 0.0.79 wheel):

* Model: ``basemodels/VGGFace.py:34-80``, VGG-16 with 3x3 convolutions (``ZeroPadding2D(1)`` + valid
  conv = padding 1), 2x2 max-pools, ``fc6`` as a 7x7 conv to 4096, ``fc7`` 1x1 to 4096 (ReLU, dropout
  0.5), ``fc8`` 1x1 to 2622, flatten, softmax. The descriptor is ``layers[-2]`` (``VGGFace.py:108``): the
  2622 ``fc8`` logits before the softmax.
* Weights: ``vgg_face_weights.h5`` from deepface's GitHub release (``VGGFace.py:87``), a Keras HDF5
  weight file loaded by ``model.load_weights`` (``VGGFace.py:103``), i.e. by layer *order*: Keras reads
  ``attrs["layer_names"]``, keeps the layers whose ``weight_names`` are non-empty and assigns them to
  the model's weighted layers in turn (keras-team/keras v2.10.0 ``keras/saving/hdf5_format.py:778-815``;
  a full-model file's ``model_weights`` group is used instead, ``keras/engine/training.py:2932-2933``).
  The 16 weighted layers map to torch as in :data:`LAYERS`; kernels are HWIO (TensorFlow
  cross-correlation, like torch) and become OIHW by ``transpose(3, 2, 0, 1)``.
* Detection (``detector_backend="opencv"``, the default, ``modi_deepface.py:391``):
  ``detectors/OpenCvWrapper.py:41-70``, OpenCV's ``haarcascade_frontalface_default`` with
  ``detectMultiScale3(img, 1.1, 10, outputRejectLevels=True)`` on the BGR image; faces in OpenCV's
  order, crop ``img[y:y+h, x:x+w]``. Alignment (``align=True``): ``OpenCvWrapper.py:73-112``, the
  ``haarcascade_eye`` (1.1, 10) on the grey crop, the two eyes with the largest
  ``|(x - w) * (y - h)|`` (sic), rotated by ``FaceDetector.py:78-123`` (PIL ``rotate``, nearest, same
  size, black fill).
* No face with ``enforce_detection=False`` (``eval_score.py:186``): the whole image is the face
  (``commons/functions.py:120-121``).
* Input (``functions.py:129-165``, then ``modi_deepface.py:670-688`` with ``normalization="base"``,
  ``functions.py:190-191``): resize keeping the aspect ratio so the face fits 224 x 224
  (``cv2.resize``, bilinear, sizes truncated to int), zero-pad centred, float32, ``/ 255``. Colour
  order **BGR** (images come from ``cv2.imread``, ``functions.py:83``); no mean subtraction.
* Distance and threshold: cosine distance ``1 - a.b / (|a| |b|)`` (``commons/distance.py:4-8``);
  ``findThreshold("VGG-Face", "cosine") = 0.40`` (``distance.py:33``), applied as ``<=``
  (``modi_deepface.py:591-593``). deepface 0.0.80 is the same; from 0.0.81 VGG-Face is a 4096-d
  (``fc7``) l2-normalised descriptor with threshold 0.68: the ``deepface`` backend of
  :mod:`cloakbench.metrics.face_backends`, a different model. Here the threshold is the constant
  :data:`THRESHOLD`, never read from an installed deepface.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .face_interface import Face, FaceBackend

THRESHOLD = 0.40  # deepface 0.0.79 commons/distance.py:33, VGG-Face cosine
TARGET_SIZE = 224  # deepface 0.0.79 commons/functions.py:237
EMBED_DIM = 2622  # VGGFace.py:76, the fc8 logits
WEIGHT_NAME = "vgg-face"  # cloakbench.weights entry of vgg_face_weights.h5

# (torch name, in channels, out channels, kernel), in the order of VGGFace.py:36-76; the Keras file's
# weighted layers are matched to these by position (Keras' own rule). In a file written by standalone
# Keras 2 from that Sequential model they are named conv2d_1 ... conv2d_16 (an assumption: the loader
# does not depend on the names).
LAYERS: list[tuple[str, int, int, int]] = [
    ("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3),
    ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3),
    ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3),
    ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3), ("conv4_3", 512, 512, 3),
    ("conv5_1", 512, 512, 3), ("conv5_2", 512, 512, 3), ("conv5_3", 512, 512, 3),
    ("fc6", 512, 4096, 7), ("fc7", 4096, 4096, 1), ("fc8", 4096, EMBED_DIM, 1),
]
KERAS_NAMES = [f"conv2d_{i}" for i in range(1, len(LAYERS) + 1)]
_POOL_AFTER = {"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"}


class VGGFaceDescriptor(nn.Module):
    """VGG-Face (deepface ``VGGFace.baseModel``) up to the pre-softmax ``fc8`` output.

    ``forward``: float ``B x 3 x 224 x 224`` in deepface's input convention (BGR, values in [0, 1]) ->
    ``B x 2622`` descriptor. Dropout layers are kept (identity in ``eval()``, the loader's mode).
    """

    def __init__(self) -> None:
        super().__init__()
        for name, cin, cout, k in LAYERS:
            self.add_module(name, nn.Conv2d(cin, cout, k, padding=1 if k == 3 else 0))
        self.drop6, self.drop7 = nn.Dropout(0.5), nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, *_ in LAYERS[:13]:
            x = F.relu(getattr(self, name)(x))
            if name in _POOL_AFTER:
                x = F.max_pool2d(x, 2, 2)
        x = self.drop6(F.relu(self.fc6(x)))
        x = self.drop7(F.relu(self.fc7(x)))
        return torch.flatten(self.fc8(x), 1)


def _need_h5py():
    try:
        import h5py
    except ImportError as exc:
        raise ImportError(f"reading vgg_face_weights.h5 needs h5py: `pip install 'cloakbench[vggface]'` "
                          f"({exc})") from exc
    return h5py


def _attr_list(group, name: str) -> list[str]:
    """A Keras string-list attribute (possibly split as name0, name1, ...), decoded."""
    if name in group.attrs:
        raw = list(group.attrs[name])
    else:
        raw, i = [], 0
        while f"{name}{i}" in group.attrs:
            raw += list(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if hasattr(v, "decode") else str(v) for v in raw]


def read_keras_h5(path: str | Path) -> dict[str, torch.Tensor]:
    """Torch state dict of :class:`VGGFaceDescriptor` from deepface's Keras ``vgg_face_weights.h5``.

    Layers are matched by order as Keras does (module docstring); each layer's 4-d array is the HWIO
    kernel (-> OIHW), its 1-d array the bias. Shapes are checked against :data:`LAYERS`.
    """
    h5py = _need_h5py()
    state: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as f:
        g = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        weighted = [(n, _attr_list(g[n], "weight_names")) for n in _attr_list(g, "layer_names")]
        weighted = [(n, w) for n, w in weighted if w]
        if len(weighted) != len(LAYERS):
            raise ValueError(f"{path}: {len(weighted)} layers with weights, VGG-Face has {len(LAYERS)}")
        for (kname, wnames), (tname, cin, cout, k) in zip(weighted, LAYERS):
            arrays = [np.asarray(g[kname][w], dtype=np.float32) for w in wnames]
            kernel = [a for a in arrays if a.ndim == 4]
            bias = [a for a in arrays if a.ndim == 1]
            if len(arrays) != 2 or len(kernel) != 1 or len(bias) != 1 or kernel[0].shape != (k, k, cin, cout) \
                    or bias[0].shape != (cout,):
                raise ValueError(f"{path}: layer {kname!r} (-> {tname}) has weights "
                                 f"{[a.shape for a in arrays]}, expected kernel {(k, k, cin, cout)} and bias {(cout,)}")
            state[f"{tname}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel[0].transpose(3, 2, 0, 1)))
            state[f"{tname}.bias"] = torch.from_numpy(bias[0])
    return state


def load_vggface(path: str | Path | None = None) -> VGGFaceDescriptor:
    """The descriptor with deepface's released weights, in eval mode.

    ``path`` defaults to the weights manager's ``vgg-face`` file; a missing file raises
    :class:`cloakbench.weights.MissingWeightError` naming ``vgg_face_weights.h5`` and how to get it.
    """
    from ..weights import resolve

    state = read_keras_h5(path if path is not None else resolve(WEIGHT_NAME))
    with torch.device("meta"):  # no random init of 145 M parameters that are overwritten anyway
        model = VGGFaceDescriptor()
    model.load_state_dict(state, assign=True)
    return model.eval()


# ---- preprocessing (deepface 0.0.79, opencv detector) ----------------------------------------------

def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(f"the vggface backend needs OpenCV: `pip install 'cloakbench[vggface]'` ({exc})") from exc
    return cv2


def rotate_to_eyes(img: np.ndarray, left: tuple[int, int], right: tuple[int, int]) -> np.ndarray:
    """deepface ``FaceDetector.alignment_procedure`` (``FaceDetector.py:78-123``) on a uint8 crop."""
    from PIL import Image

    (lx, ly), (rx, ry) = left, right
    third, direction = ((rx, ly), -1) if ly > ry else ((lx, ry), 1)
    a = math.dist(left, third)
    b = math.dist(right, third)
    c = math.dist(right, left)
    if b == 0 or c == 0:
        return img
    cos_a = min(1.0, max(-1.0, (b * b + c * c - a * a) / (2 * b * c)))  # clamped: arccos of 1 + eps is nan
    angle = math.degrees(math.acos(cos_a))
    if direction == -1:
        angle = 90 - angle
    return np.array(Image.fromarray(img).rotate(direction * angle))


class OpenCvFaces:
    """deepface 0.0.79's ``opencv`` detector with eye alignment (``OpenCvWrapper.py:6-112``)."""

    def __init__(self, align: bool = True) -> None:
        cv2 = _cv2()
        root = Path(cv2.data.haarcascades)
        self.face = cv2.CascadeClassifier(str(root / "haarcascade_frontalface_default.xml"))
        self.eye = cv2.CascadeClassifier(str(root / "haarcascade_eye.xml"))
        if self.face.empty() or self.eye.empty():
            raise FileNotFoundError(f"OpenCV Haar cascades not found under {root} (needs opencv-python < 5)")
        self.align = align

    def _align(self, crop: np.ndarray) -> np.ndarray:
        cv2 = _cv2()
        eyes = self.eye.detectMultiScale(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), 1.1, 10)
        eyes = sorted(eyes, key=lambda v: abs((v[0] - v[2]) * (v[1] - v[3])), reverse=True)
        if len(eyes) < 2:
            return crop
        e1, e2 = (eyes[0], eyes[1]) if eyes[0][0] < eyes[1][0] else (eyes[1], eyes[0])  # OpenCvWrapper.py:97-105
        centre = [(int(e[0] + e[2] / 2), int(e[1] + e[3] / 2)) for e in (e1, e2)]
        return rotate_to_eyes(crop, centre[0], centre[1])

    def __call__(self, bgr: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int, int, int], float]]:
        """``(crop, (x, y, w, h), confidence)`` per face of a uint8 BGR image, in OpenCV's order."""
        try:
            boxes, _, scores = self.face.detectMultiScale3(bgr, 1.1, 10, outputRejectLevels=True)
        except Exception:  # deepface swallows detector errors too (OpenCvWrapper.py:55-56)
            return []
        out = []
        for (x, y, w, h), s in zip(boxes, np.ravel(scores)):
            crop = bgr[int(y): int(y + h), int(x): int(x + w)]
            out.append((self._align(crop) if self.align else crop, (int(x), int(y), int(w), int(h)), float(s)))
        return out


def to_input(face_bgr: np.ndarray) -> np.ndarray:
    """deepface's model input from a uint8 ``H x W x 3`` BGR face: float32 ``224 x 224 x 3`` in [0, 1].

    Aspect-preserving ``cv2.resize`` to fit, zero padding centred, ``/ 255`` (``functions.py:129-165``).
    """
    cv2 = _cv2()
    h, w = face_bgr.shape[:2]
    factor = min(TARGET_SIZE / h, TARGET_SIZE / w)
    img = cv2.resize(face_bgr, (int(w * factor), int(h * factor)))
    d0, d1 = TARGET_SIZE - img.shape[0], TARGET_SIZE - img.shape[1]
    img = np.pad(img, ((d0 // 2, d0 - d0 // 2), (d1 // 2, d1 - d1 // 2), (0, 0)), "constant")
    if img.shape[:2] != (TARGET_SIZE, TARGET_SIZE):
        img = cv2.resize(img, (TARGET_SIZE, TARGET_SIZE))
    return img.astype(np.float32) / 255


class VGGFace079(FaceBackend):
    """The paper's thresholded IMS backend: deepface 0.0.79 VGG-Face, opencv detector, cosine, tau 0.40.

    ``weights``: path of ``vgg_face_weights.h5`` (default: the weights manager's ``vgg-face``);
    ``model``: an already built :class:`VGGFaceDescriptor` instead (tests use random weights).
    ``detector="opencv"`` (the reference) or ``"skip"`` (every image is one face, e.g. pre-cropped).
    :meth:`faces` keeps OpenCV's order, not largest first: MetaCloak scores ``dfs[0]``, deepface's first
    face (``eval_score.py:187``). The threshold is :data:`THRESHOLD` and cannot be changed.
    """

    name = "vggface"
    distance = "cosine"
    licence = "deepface MIT (code); weights: deepface's conversion of Oxford VGG-Face (original terms apply)"

    def __init__(self, weights: str | Path | None = None, model: VGGFaceDescriptor | None = None,
                 detector: str = "opencv", align: bool = True, device: str = "cpu") -> None:
        if detector not in ("opencv", "skip"):
            raise ValueError(f"vggface detector must be 'opencv' (the reference) or 'skip', not {detector!r}")
        _cv2()
        if model is None:
            path = Path(weights) if weights is not None else None
            model = load_vggface(path)
            self.weights_tag = str(path) if path is not None else WEIGHT_NAME
        else:
            self.weights_tag = f"module@{id(model):x}:{float(model.fc8.bias.detach().double().sum()):.9g}"
        self.model = model.to(device).eval()
        self.device, self.detector, self.align = device, detector, align
        self._detect = OpenCvFaces(align) if detector == "opencv" else None

    @property
    def threshold(self) -> float:  # read-only: deepface 0.0.79 distance.py:33
        return THRESHOLD

    @torch.no_grad()
    def embed(self, inputs: list[np.ndarray]) -> np.ndarray:
        """``N x 2622`` float64 descriptors of ``N`` inputs from :func:`to_input`."""
        x = torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2).to(self.device)
        return self.model(x).double().cpu().numpy()

    def faces(self, image: np.ndarray) -> list[Face]:
        bgr = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., ::-1])
        if self._detect is None:
            h, w = bgr.shape[:2]
            found = [(bgr, (0, 0, w, h), 0.0)]
        else:
            found = [f for f in self._detect(bgr) if f[0].shape[0] > 0 and f[0].shape[1] > 0]
        if not found:
            return []
        embs = self.embed([to_input(crop) for crop, _, _ in found])
        return [Face((x, y, x + w, y + h), conf, e) for (_, (x, y, w, h), conf), e in zip(found, embs)]

    def embed_whole(self, image: np.ndarray) -> np.ndarray:
        bgr = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., ::-1])
        return self.embed([to_input(bgr)])[0]

    def version(self) -> str:
        return (f"vggface 2622-d (deepface 0.0.79 port, torch) {self.detector}{' align' if self.align else ''} "
                f"tau={self.threshold:.2f} weights={self.weights_tag}")

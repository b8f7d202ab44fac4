"""Face detection, 5-point alignment to the FFHQ template, and soft paste-back (offline, dlib).

The reference CodeFormer pipeline uses RetinaFace-R50 landmarks and a face-parsing mask; offline we
use dlib's detector and 5-point model (two corners per eye, one point under the nose) and fit a
similarity transform from the two eye centres and the nose point to the FFHQ 512 template
(docs/ENVIRONMENT.md §5.6), then paste back with a feathered elliptical mask. This differs slightly from
the reference alignment; results record which pipeline was used.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

# FFHQ 512 template: left eye, right eye, nose tip (image coordinates).
TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935]])


DETECTORS = ("hog", "cnn", "hog+cnn")


@functools.lru_cache(maxsize=1)
def _dlib():
    try:
        import dlib
        import face_recognition_models as frm
    except ImportError as exc:
        raise ImportError(f"face alignment needs `pip install 'cloakbench[faces]'` ({exc})") from exc
    return dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(frm.pose_predictor_five_point_model_location())


@functools.lru_cache(maxsize=1)
def _mmod():
    """dlib's CNN (MMOD) face detector shipped in face_recognition_models (~1.5 s per 512 px image on CPU)."""
    import face_recognition_models as frm

    dlib = _dlib()[0]
    return dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())


def detect(image_uint8: np.ndarray, upsample: int = 1, detector: str = "hog+cnn") -> list:
    """dlib face rectangles of ``H x W x 3`` uint8 RGB. ``hog``: the frontal HOG detector; ``cnn``: MMOD;
    ``hog+cnn``: MMOD only where HOG finds no face (HOG missed 1 of 12 MetaCloak-protected faces of
    shared/data; a missed face means CodeFormer is skipped for that image)."""
    if detector not in DETECTORS:
        raise ValueError(f"face detector must be one of {', '.join(DETECTORS)}, not {detector!r}")
    rects = list(_dlib()[1](image_uint8, upsample)) if detector != "cnn" else []
    if detector == "cnn" or (detector == "hog+cnn" and not rects):
        rects = [d.rect for d in _mmod()(image_uint8, upsample)]
    return rects


def landmarks(image_uint8: np.ndarray, upsample: int = 1, detector: str = "hog+cnn") -> list[np.ndarray]:
    """Per detected face (largest first, :func:`detect`), the 3 alignment points: left eye, right eye, nose (x, y)."""
    _, _, shape = _dlib()
    rects = sorted(detect(image_uint8, upsample, detector), key=lambda r: r.width() * r.height(), reverse=True)
    out = []
    for r in rects:
        s = shape(image_uint8, r)
        p = np.array([[s.part(i).x, s.part(i).y] for i in range(5)], dtype=np.float64)
        eyes = sorted([p[0:2].mean(0), p[2:4].mean(0)], key=lambda e: e[0])
        out.append(np.stack([eyes[0], eyes[1], p[4]]))
    return out


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) mapping ``src`` points to ``dst``: a 2 x 3 matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = (sig * np.diag(sign)).sum() / (s**2).sum() * len(src)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def invert(m: np.ndarray) -> np.ndarray:
    a = np.vstack([m, [0, 0, 1]])
    return np.linalg.inv(a)[:2]


def warp(image: torch.Tensor, out_from_in: np.ndarray, out_hw: tuple[int, int]) -> torch.Tensor:
    """Warp ``1 x C x H x W`` by the affine map ``out_from_in`` (pixel coords, 2 x 3) into ``out_hw``."""
    h, w = image.shape[-2:]
    oh, ow = out_hw
    inv = invert(out_from_in)  # output pixel -> input pixel
    ys, xs = torch.meshgrid(torch.arange(oh, dtype=torch.float64), torch.arange(ow, dtype=torch.float64), indexing="ij")
    a = torch.from_numpy(inv)
    src_x = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
    src_y = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    grid = torch.stack([(2 * src_x + 1) / w - 1, (2 * src_y + 1) / h - 1], -1)[None].to(image)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


@functools.lru_cache(maxsize=4)
def soft_mask(size: int = 512, feather: float = 0.06) -> torch.Tensor:
    """``1 x 1 x size x size`` feathered ellipse covering the aligned face (stand-in for the parsing mask)."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    r = torch.sqrt(((xs - 0.5) / 0.40) ** 2 + ((ys - 0.55) / 0.47) ** 2)
    return torch.clamp((1 - r) / feather, 0, 1)[None, None]


def restore_faces(
    image: torch.Tensor,
    restore: "callable",
    *,
    upscale: int = 2,
    crop: int = 512,
    upsample: int = 1,
    detector: str = "hog+cnn",
) -> tuple[torch.Tensor, int]:
    """Detect, align, restore (``restore``: ``1 x 3 x crop x crop`` -> same, in [0, 1]) and paste back.

    ``image`` is ``3 x H x W`` in [0, 1]. The background is upscaled by ``upscale`` (bilinear, as the
    reference's ``cv2.INTER_LINEAR``); faces are pasted into it. ``detector``: :func:`detect`. Returns the
    image and the face count.
    """
    arr = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    h, w = arr.shape[:2]
    out = F.interpolate(image[None], size=(h * upscale, w * upscale), mode="bilinear", align_corners=False)
    pts = landmarks(arr, upsample, detector)
    for p in pts:
        m = similarity(p, TEMPLATE * crop / 512)  # image -> crop
        face = warp(image[None], m, (crop, crop))
        restored = restore(face).clamp(0, 1)
        up = np.diag([1.0 / upscale, 1.0 / upscale, 1.0])  # upscaled image -> image -> crop
        m_up = m @ np.vstack([up[:2], [0, 0, 1]])
        back = invert(m_up)  # crop -> upscaled image
        pasted = warp(restored, back, out.shape[-2:])
        mask = warp(soft_mask(crop).to(image), back, out.shape[-2:])
        out = mask * pasted + (1 - mask) * out
    return out[0].clamp(0, 1), len(pts)


def face_box_mask(image: torch.Tensor, upsample: int = 1, detector: str = "hog") -> torch.Tensor:
    """``H x W`` boolean mask of detected face boxes (for tests and analysis)."""
    arr = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    mask = torch.zeros(arr.shape[:2], dtype=torch.bool)
    for r in detect(arr, upsample, detector):
        mask[max(0, r.top()) : r.bottom(), max(0, r.left()) : r.right()] = True
    return mask


def rotation_deg(m: np.ndarray) -> float:
    return math.degrees(math.atan2(m[1, 0], m[0, 0]))

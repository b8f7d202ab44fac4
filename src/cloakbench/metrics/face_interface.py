"""The face-backend interface: a detected :class:`Face` and the :class:`FaceBackend` base class (shared by
:mod:`.face_backends`, which registers the backends, and the backend modules such as :mod:`.vggface`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass
class Face:
    """One detected face: ``box`` (x0, y0, x1, y1) in pixels, detector ``confidence``, ``embedding``."""

    box: tuple[int, int, int, int]
    confidence: float
    embedding: np.ndarray

    @property
    def area(self) -> int:
        return max(0, self.box[2] - self.box[0]) * max(0, self.box[3] - self.box[1])


class FaceBackend:
    """Base class. ``distance`` is ``"l2"`` or ``"cosine"``; ``threshold`` verifies a pair at or below it."""

    name: ClassVar[str] = ""
    distance: ClassVar[str] = "cosine"
    threshold: float = 0.4
    licence: ClassVar[str] = ""

    def faces(self, image: np.ndarray) -> list[Face]:
        """Faces in a uint8 ``H x W x 3`` RGB image, largest first."""
        raise NotImplementedError

    def embed_whole(self, image: np.ndarray) -> np.ndarray:
        """Embedding of the whole image taken as one face (used when detection finds nothing)."""
        raise NotImplementedError

    def dist(self, a: np.ndarray, b: np.ndarray) -> float:
        """Distance in the backend's verification metric."""
        if self.distance == "l2":
            return float(np.linalg.norm(a - b))
        return 1.0 - cosine(a, b)

    def version(self) -> str:
        return ""


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else 0.0

"""Image I/O and the tensor contract.

Every public boundary of cloakbench passes images as float32 tensors of shape ``B x 3 x H x W`` with
values in ``[0, 1]``. This module turns files into that contract and back:

* :func:`read_images` / :func:`load_images` load a folder or a list of PNG / JPEG / WebP files,
  honour EXIF orientation, convert grayscale, palette, RGBA / LA (composited on white), CMYK and
  16-bit images to RGB, and apply the paper's resize policy (shorter side to ``size``, then a center
  crop to ``size x size``; the paper and Anti-DreamBooth use 512 and bilinear resizing).
* :func:`save_images` writes lossless PNGs, rounding to uint8 (never truncating), atomically.
* :func:`perturbation_norms` measures L-inf / L2 distances between two image sets in ``[0, 1]`` units
  and as ``k/255``; :func:`quantize` gives what an 8-bit file will hold, so budgets are measured
  after saving.

Bad input raises :class:`ImageError`, which names every bad file at once, so one broken file does
not hide the others.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .fsmode import as_umask

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# image formats not read: named in a warning when a folder holds them (never skipped silently)
OTHER_IMAGE_SUFFIXES = (".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif", ".avif", ".jfif", ".jxl", ".jp2", ".ppm")
DEFAULT_SIZE = 512  # paper §Fine-tuning: 512 px, center crop
DEFAULT_MIN_SIZE = 64  # smaller inputs are refused rather than silently upscaled 8x or more
DEFAULT_MAX_PIXELS = 64_000_000  # about 8000 x 8000: larger inputs are refused before decoding


def max_pixels() -> int:
    """The largest image (width x height) read: ``$CLOAKBENCH_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`.
    A decoded image costs 12 bytes per pixel as float32 RGB (64 MP: 0.8 GB)."""
    return int(os.environ.get("CLOAKBENCH_MAX_PIXELS", DEFAULT_MAX_PIXELS))


# ----------------------------------------------------------------------------- listing

def utf8(name: str) -> bool:
    """Whether a file name (as Python reads it from the file system) is valid UTF-8 text."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def list_image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Sorted image files (by suffix) directly inside ``folder``; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError({folder: "not a folder" if folder.exists() else "folder does not exist"})
    files, skipped = [], []
    for p in sorted(folder.iterdir()):
        if not utf8(p.name):
            raise ImageError({p: "the name is not valid UTF-8 (written by another system's encoding): rename the "
                                 "file; records, tables and the report hold names as UTF-8 text"})
        try:
            is_file = p.is_file()  # a symlink loop raises here
        except OSError:
            is_file = False
        if is_file and p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
        elif p.name.startswith(".") or p.name == "clean":  # hidden; a protection's clean crops (protect writes them)
            continue
        elif not is_file or p.suffix.lower() in OTHER_IMAGE_SUFFIXES:
            skipped.append(p.name + ("/" if p.is_dir() else ""))
    if skipped:
        log.warning("%s: not read (only %s files directly inside are images here): %s", folder,
                    "/".join(IMAGE_SUFFIXES), ", ".join(skipped))
    if not files:
        raise ImageError({folder: f"empty folder: no {'/'.join(IMAGE_SUFFIXES)} files"})
    return files


def _expand(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return list_image_files(path) if path.is_dir() or not path.exists() and not path.suffix else [path]
    paths = [Path(p) for p in source]
    if not paths:
        raise ImageError({Path("<list>"): "empty list of images"})
    return paths


# ----------------------------------------------------------------------------- decoding

def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Decoded PIL image -> float32 ``H x W x 3`` array in [0, 1] (EXIF orientation applied)."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale PNGs decode as I;16 or I: scale by the 16-bit range (PIL's convert("RGB")
        # would clip every value above 255 instead).
        gray = np.asarray(img, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    if mode == "F":
        gray = np.asarray(img, dtype=np.float32)
        gray = gray / 255.0 if gray.max(initial=0.0) > 1.0 else gray
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    rgb = img.convert("RGB")  # L, 1, P, CMYK (incl. Adobe-inverted JPEGs), YCbCr, LAB, HSV
    return np.asarray(rgb, dtype=np.float32) / 255.0


def read_rgb(path: str | os.PathLike[str], *, min_size: int | None = None, resize_to: int | None = None) -> np.ndarray:
    """Decode one file fully into a float32 ``H x W x 3`` array in [0, 1].

    Raises :class:`ImageError` naming ``path`` for a missing file, a non-image, a truncated or
    corrupt file, or an image whose shorter side is below ``min_size`` pixels. ``resize_to``: the short side it
    will be resized to; an image that would then exceed the pixel limit (a 64 x 900000 strip asks for 44 GB at
    512 px) is refused from its header too.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError({path: "file does not exist"})
    try:
        with Image.open(path) as img:
            w, h = img.size  # from the header: refuse before decoding
            if w * h > max_pixels():
                raise ImageError({path: f"image is {w}x{h} ({w * h / 1e6:.0f} MP), over the limit of "
                                        f"{max_pixels() / 1e6:.0f} MP (set CLOAKBENCH_MAX_PIXELS to raise it)"})
            if resize_to and min(w, h) > 0 and w * h * (resize_to / min(w, h)) ** 2 > max_pixels():
                raise ImageError({path: f"image is {w}x{h}: resized to {resize_to} px on its short side it would be "
                                        f"{w * h * (resize_to / min(w, h)) ** 2 / 1e6:.0f} MP, over the limit of "
                                        f"{max_pixels() / 1e6:.0f} MP; crop it to a sensible aspect ratio first"})
            img.load()  # force the full decode: truncated / corrupt data fails here, not later
            if min_size is not None and min(img.size) < min_size:
                raise ImageError({path: f"image is {img.size[0]}x{img.size[1]}, smaller than the minimum {min_size} px"})
            return _to_rgb_array(img)
    except UnidentifiedImageError:
        raise ImageError({path: "not an image (unrecognised format)"}) from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError({path: f"corrupt or truncated image ({exc})"}) from exc


# ----------------------------------------------------------------------------- geometry

def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the shorter side is ``size`` (bilinear, antialiased), then center-crop ``size x size``.

    ``images``: ``B x C x H x W`` float in [0, 1]; returns ``B x C x size x size`` in [0, 1].
    """
    _, _, h, w = images.shape
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        if (nh, nw) != (h, w):
            images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (nh - size) // 2, (nw - size) // 2
        images = images[:, :, top : top + size, left : left + size]
    return images.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- loading

@dataclass
class LoadedImages:
    """Images in the tensor contract and the files they came from."""

    images: torch.Tensor  # B x 3 x H x W, float32, [0, 1]
    paths: list[Path]
    problems: dict[Path, str]  # files skipped with on_error="skip"


def read_images(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    size: int | None = DEFAULT_SIZE,
    *,
    min_size: int | None = DEFAULT_MIN_SIZE,
    on_error: str = "raise",
) -> LoadedImages:
    """Load a folder or a list of files into a ``B x 3 x size x size`` float32 tensor in [0, 1].

    ``size=None`` keeps the original size (all images must then share it). Every file is tried;
    with ``on_error="raise"`` one :class:`ImageError` lists every bad file, with ``"skip"`` bad files
    are logged, left out and reported in ``problems``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    paths = _expand(source)
    arrays: list[torch.Tensor] = []
    good: list[Path] = []
    problems: dict[Path, str] = {}
    for path in paths:
        try:
            arr = read_rgb(path, min_size=min_size, resize_to=size)
        except ImageError as exc:
            problems.update(exc.problems)
            continue
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]
        if size is not None:
            if min(t.shape[-2:]) < size:
                log.info("%s: upscaling %dx%d to %d px", path, t.shape[-1], t.shape[-2], size)
            t = resize_center_crop(t, size)
        arrays.append(t)
        good.append(path)
    if problems and on_error == "raise":
        raise ImageError(problems)
    for path, why in problems.items():
        log.warning("skipping %s: %s", path, why)
    if not arrays:
        raise ImageError(problems or {Path(str(source)): "no images"})
    shapes = {tuple(a.shape[-2:]) for a in arrays}
    if len(shapes) > 1:
        raise ImageError({p: f"size {tuple(a.shape[-2:])} differs; pass size= to resize" for p, a in zip(good, arrays)})
    return LoadedImages(torch.cat(arrays).float().contiguous(), good, problems)


def load_images(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    size: int | None = DEFAULT_SIZE,
    *,
    min_size: int | None = DEFAULT_MIN_SIZE,
) -> torch.Tensor:
    """Shortcut for ``read_images(...).images``: ``B x 3 x size x size`` float32 in [0, 1]."""
    return read_images(source, size, min_size=min_size).images


# ----------------------------------------------------------------------------- 8-bit and saving

def check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Validate the contract: a 4-D ``B x 3 x H x W`` floating tensor with values in [0, 1]."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a B x 3 x H x W tensor, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be floating point in [0, 1], got {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"{name} must lie in [0, 1], got range [{lo:.4f}, {hi:.4f}]")
    return images


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``B x 3 x H x W`` in [0, 1] -> ``B x H x W x 3`` uint8, rounding to nearest (never truncating)."""
    x = images.detach().float().clamp(0.0, 1.0).mul(255.0).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def quantize(images: torch.Tensor) -> torch.Tensor:
    """The values an 8-bit file of ``images`` holds, back in [0, 1] (same dtype and device)."""
    return images.clamp(0.0, 1.0).mul(255.0).round().div(255.0).to(images.dtype)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """``B x 3 x H x W`` in [0, 1] -> list of RGB PIL images (rounded to uint8)."""
    return [Image.fromarray(a, "RGB") for a in to_uint8(images)]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    as_umask(tmp, directory=False)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_images(
    images: torch.Tensor,
    out_dir: str | os.PathLike[str],
    names: Iterable[str] | None = None,
) -> list[Path]:
    """Save ``B x 3 x H x W`` images in [0, 1] as lossless PNGs in ``out_dir``; returns the paths.

    ``names`` (file stems or names; the suffix is forced to ``.png``) default to ``00000.png`` ...
    Each file is written atomically, so an interrupted save never leaves a half-written PNG.
    """
    import io

    check_images(images)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{i:05d}" for i in range(images.shape[0])] if names is None else list(names)
    if len(names) != images.shape[0]:
        raise ValueError(f"{len(names)} names for {images.shape[0]} images")
    paths = []
    for arr, name in zip(to_uint8(images), names):
        buf = io.BytesIO()
        Image.fromarray(arr, "RGB").save(buf, format="PNG")
        path = out / (Path(name).stem + ".png")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- budgets

def parse_budget(value: str | float | int) -> float:
    """``"8/255"`` or ``"0.0314"`` (or a number) -> budget in [0, 1] units; must lie in (0, 1].

    A bare number above 1 is refused rather than guessed as k/255: write ``"8/255"``.
    """
    text = str(value).strip()
    try:
        if isinstance(value, str) and "/" in text:  # k/255 with any decimal k (the docs write 6.375/255)
            num, _, den = text.partition("/")
            v = float(num) / float(den)
        else:
            v = float(Fraction(text)) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"cannot read budget {value!r}; write it as k/255, e.g. '8/255'") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"budget {text} is not a finite number; write it as k/255, e.g. '8/255'")
    if not 0 < v <= 1:
        if v > 1 and "/" not in text:
            hint = f"; did you mean '{text}/255'?"
        elif v > 1:
            hint = f" ({v * 255:g}/255: a budget is at most 255/255, the whole pixel range)"
        else:
            hint = ""
        raise ValueError(f"budget {text} is outside (0, 1] ([0, 1] image units){hint}")
    if v * 255 < 0.5:
        raise ValueError(f"budget {text} is {v * 255:.3g}/255: after saving to 8 bits every pixel rounds back, so the "
                         "measured perturbation would be 0/255; the smallest budget that survives is 1/255")
    return v


def format_budget(eps: float) -> str:
    """Budget in [0, 1] units -> ``"k/255"`` (k with at most two decimals)."""
    k = eps * 255.0
    return f"{k:.0f}/255" if abs(k - round(k)) < 1e-6 else f"{k:.2f}/255"


@dataclass
class Distances:
    """Per-image distances between two image sets, held in k/255 units (``linf`` / ``l2`` give [0, 1] units)."""

    linf_255: torch.Tensor  # (B,) max |a - b| over C, H, W, in k/255
    l2_255: torch.Tensor  # (B,) ||a - b||_2 over C, H, W, in k/255 units

    @property
    def linf(self) -> torch.Tensor:
        return self.linf_255 / 255.0

    @property
    def l2(self) -> torch.Tensor:
        return self.l2_255 / 255.0

    def summary(self) -> dict[str, float]:
        """Max L-inf and mean L2, in [0, 1] units and as k/255."""
        return {
            "linf_max": float(self.linf.max()),
            "linf_max_255": float(self.linf_255.max()),
            "l2_mean": float(self.l2.mean()),
            "l2_mean_255": float(self.l2_255.mean()),
        }


def perturbation_norms(a: torch.Tensor, b: torch.Tensor, *, measured: bool = True) -> Distances:
    """Distances between image sets ``a`` and ``b`` (``B x 3 x H x W`` in [0, 1]).

    With ``measured=True`` both sets are first rounded to 8 bits, i.e. the budget is measured as it
    will be after saving (docs/PROTECTIONS.md: budgets are checked on the saved files); the L-inf is then
    an exact integer k of k/255.
    """
    if a.shape != b.shape:
        raise ValueError(f"image sets differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    a255, b255 = a.detach().double() * 255.0, b.detach().double() * 255.0
    if measured:
        a255, b255 = a255.clamp(0, 255).round(), b255.clamp(0, 255).round()
    diff = (a255 - b255).flatten(1)
    return Distances(linf_255=diff.abs().amax(dim=1), l2_255=diff.norm(dim=1))

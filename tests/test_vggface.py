"""deepface 0.0.79 VGG-Face port: architecture, Keras h5 loading, preprocessing, the 0.40 threshold and
the -1 penalty of the paper's IMS (fixed embeddings; random weights of the real architecture; offline)."""

from __future__ import annotations

import importlib.metadata
import math
import sys
import types

import numpy as np
import pytest
import torch

from cloakbench import weights
from cloakbench.metrics import create_face_backend, create_metric
from cloakbench.metrics.face_backends import Face, FaceBackend
from cloakbench.metrics.vggface import (EMBED_DIM, KERAS_NAMES, LAYERS, THRESHOLD, VGGFace079, VGGFaceDescriptor,
                                        read_keras_h5, rotate_to_eyes, to_input)

pytest.importorskip("cv2", reason="the vggface backend needs OpenCV (cloakbench[vggface] or [iqa])")


@pytest.fixture(scope="module")
def random_model() -> VGGFaceDescriptor:
    """The real architecture with He-normal random weights (built on meta: skips a 13 s default init)."""
    with torch.device("meta"):
        model = VGGFaceDescriptor()
    model = model.to_empty(device="cpu").eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.ndim == 4 else 1
            p.normal_(0.0, math.sqrt(2.0 / fan_in) if p.ndim == 4 else 0.01, generator=gen)
    return model


def test_architecture_gives_2622_d_descriptor(random_model):
    assert sum(p.numel() for p in random_model.parameters()) == 145_002_878  # VGG-Face, fc8 = 2622 classes
    with torch.no_grad():
        out = random_model(torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (1, EMBED_DIM) == (1, 2622) and torch.isfinite(out).all()
    assert not torch.allclose(out.sum(), torch.tensor(1.0))  # the pre-softmax logits, not probabilities


# ---- Keras h5 -> torch --------------------------------------------------------------------------

def _keras_layer_names() -> list[str]:
    """Every layer of deepface's Sequential (VGGFace.py:36-78) as standalone Keras 2 names them."""
    names, conv, pad, pool = [], 0, 0, 0
    for block in (2, 2, 3, 3, 3):
        for _ in range(block):
            pad, conv = pad + 1, conv + 1
            names += [f"zero_padding2d_{pad}", f"conv2d_{conv}"]
        pool += 1
        names.append(f"max_pooling2d_{pool}")
    return names + ["conv2d_14", "dropout_1", "conv2d_15", "dropout_2", "conv2d_16", "flatten_1", "activation_1"]


def write_keras_h5(path, full_model: bool = False, seed: int = 0, bad: str | None = None) -> dict:
    """A Keras-layout weight file with the real names and shapes. Large kernels are chunked and left at
    the fill value except one random entry per layer (keeps the file small); returns what was written."""
    import h5py

    rng = np.random.default_rng(seed)
    written = {}
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        root.attrs["layer_names"] = [n.encode() for n in _keras_layer_names()]
        root.attrs["backend"], root.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        for n in _keras_layer_names():
            g = root.create_group(n)
            if not n.startswith("conv2d_"):
                g.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            tname, cin, cout, k = LAYERS[KERAS_NAMES.index(n)]
            if n == bad:
                cout += 1
            g.attrs["weight_names"] = [f"{n}/kernel:0".encode(), f"{n}/bias:0".encode()]
            kern = g.create_dataset(f"{n}/kernel:0", shape=(k, k, cin, cout), dtype="f4", chunks=True, fillvalue=0.0)
            if tname == "conv1_1":
                full = rng.standard_normal((k, k, cin, cout)).astype("f4")
                kern[...] = full
                written[tname] = full
            else:
                idx = tuple(int(rng.integers(s)) for s in (k, k, cin, cout))
                kern[idx] = written[f"{tname}@value"] = float(rng.standard_normal())
                written[f"{tname}@index"] = idx
            bias = rng.standard_normal(cout).astype("f4")
            g.create_dataset(f"{n}/bias:0", data=bias)
            written[f"{tname}.bias"] = bias
    return written


@pytest.fixture(scope="module", params=[False, True], ids=["save_weights", "model.save"])
def keras_file(request, tmp_path_factory):
    """(written values, loaded state dict) of a synthetic vgg_face_weights.h5 in each Keras layout."""
    pytest.importorskip("h5py", reason="h5py reads the Keras file: pip install 'cloakbench[vggface]'")
    path = tmp_path_factory.mktemp("keras") / "vgg_face_weights.h5"
    written = write_keras_h5(path, full_model=request.param)
    return written, read_keras_h5(path)


def test_keras_h5_round_trip(keras_file):
    w, state = keras_file
    assert torch.equal(state["conv1_1.weight"], torch.from_numpy(w["conv1_1"].transpose(3, 2, 0, 1)))
    for tname, *_ in LAYERS:
        assert torch.equal(state[f"{tname}.bias"], torch.from_numpy(w[f"{tname}.bias"]))
        if tname != "conv1_1":  # HWIO index (h, w, i, o) -> OIHW (o, i, h, w)
            h, x, i, o = w[f"{tname}@index"]
            assert state[f"{tname}.weight"][o, i, h, x].item() == pytest.approx(w[f"{tname}@value"])
    with torch.device("meta"):
        model = VGGFaceDescriptor()
    model.load_state_dict(state, assign=True, strict=True)  # every key and shape matches the torch model


def test_transposed_kernel_is_the_keras_convolution(keras_file):
    """TensorFlow convolutions are cross-correlations like torch's: no kernel flip, only HWIO -> OIHW."""
    w, state = keras_file
    k, b = w["conv1_1"], w["conv1_1.bias"]
    x = np.random.default_rng(2).random((5, 6, 3)).astype("f4")  # H x W x C, as Keras sees it
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))  # ZeroPadding2D((1, 1))
    want = np.stack([[np.einsum("hwi,hwio->o", xp[r:r + 3, c:c + 3], k) + b for c in range(6)] for r in range(5)])
    conv = torch.nn.Conv2d(3, 64, 3, padding=1)
    conv.load_state_dict({"weight": state["conv1_1.weight"], "bias": state["conv1_1.bias"]})
    with torch.no_grad():
        got = conv(torch.from_numpy(x).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_h5_shape_mismatch_names_the_layer(tmp_path):
    pytest.importorskip("h5py", reason="h5py reads the Keras file: pip install 'cloakbench[vggface]'")
    path = tmp_path / "bad.h5"
    write_keras_h5(path, bad="conv2d_2")
    with pytest.raises(ValueError, match=r"conv2d_2.*conv1_2"):
        read_keras_h5(path)


def test_missing_weights_error_names_file_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOAKBENCH_HOME", str(tmp_path))
    with pytest.raises(weights.MissingWeightError) as err:
        VGGFace079()
    msg = str(err.value)
    assert "vgg_face_weights.h5" in msg and "cloakbench weights fetch vgg-face" in msg
    assert "serengil/deepface_models/releases/download/v1.0/vgg_face_weights.h5" in msg
    with pytest.raises(weights.MissingWeightError):  # ims[paper] uses it for the thresholded part
        create_metric("ims", backend="paper", ip_backend=FixedFaces({}, "ip"))


# ---- preprocessing ------------------------------------------------------------------------------

def test_to_input_keeps_aspect_pads_and_scales():
    face = np.full((100, 50, 3), 255, np.uint8)
    face[..., 0] = 51  # the B channel of a BGR face: channel order is kept as given
    x = to_input(face)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    assert (x[:, :56] == 0).all() and (x[:, 168:] == 0).all()  # 224 x 112 face, 56 zero columns each side
    assert np.allclose(x[:, 56:168, 0], 0.2) and np.allclose(x[:, 56:168, 1:], 1.0)


def test_eye_alignment_levels_the_eyes():
    assert np.array_equal(rotate_to_eyes(np.eye(9, dtype=np.uint8)[..., None].repeat(3, 2), (2, 4), (6, 4)),
                          np.eye(9, dtype=np.uint8)[..., None].repeat(3, 2))  # level eyes: no rotation
    img = np.zeros((101, 101, 3), np.uint8)
    left, right = (30, 60), (70, 40)  # right eye higher
    for x, y in (left, right):
        img[y - 1:y + 2, x - 1:x + 2] = 255
    out = rotate_to_eyes(img, left, right)[..., 0]
    ys, xs = np.nonzero(out > 0)
    lhs, rhs = ys[xs < 50].mean(), ys[xs >= 50].mean()
    assert abs(lhs - rhs) < 1.5  # both eye blobs on one row after the rotation


def test_backend_end_to_end_with_random_weights(random_model):
    """The vggface backend on random weights: no face in a flat image; an image verifies against itself."""
    blank = np.full((120, 100, 3), 128, np.uint8)
    assert VGGFace079(model=random_model).faces(blank) == []  # Haar finds nothing: whole image is used
    backend = VGGFace079(model=random_model, detector="skip")
    gen = torch.Generator().manual_seed(3)
    a, b = torch.rand(1, 3, 64, 48, generator=gen), torch.rand(1, 3, 64, 48, generator=gen).pow(3)
    r = create_metric("ims_vgg", backend=backend)(torch.cat([a, b]), a)
    assert r.name == "ims_vgg[vggface]" and r.details["threshold"] == 0.40 and r.details["distance"] == "cosine"
    assert r.per_image[0] == pytest.approx(1.0, abs=1e-6)  # distance 0 <= 0.40
    assert r.per_image[1] == -1.0 or 0.6 <= r.per_image[1] <= 1.0
    assert "deepface 0.0.79 port" in r.details["backend_version"]


# ---- thresholding and the -1 penalty with fixed embeddings ---------------------------------------

def unit(cos: float) -> np.ndarray:
    """A 3-d vector at cosine ``cos`` to e1 = (1, 0, 0)."""
    return np.array([cos, math.sqrt(1.0 - cos * cos), 0.0])


def imgs(*keys: int) -> torch.Tensor:
    """One 8 x 8 image per key; the key is the red level (k/255) that the fake backends look up."""
    x = torch.zeros(len(keys), 3, 8, 8)
    for i, k in enumerate(keys):
        x[i, 0] = k / 255
    return x


class FixedFaces(FaceBackend):
    """Fixed embeddings per image key (None: no face); ``whole`` is the whole-image embedding."""

    name = "fixed"

    def __init__(self, table: dict, tag: str, whole: np.ndarray | None = None) -> None:
        self.table, self.tag, self.whole = table, tag, whole if whole is not None else np.array([0.0, 0.0, 1.0])

    def faces(self, image):
        emb = self.table[int(round(float(image[..., 0].mean())))]
        return [] if emb is None else [Face((0, 0, 8, 8), 1.0, np.asarray(emb, dtype=float))]

    def embed_whole(self, image):
        return self.whole


class FixedVGG(VGGFace079):
    """The vggface backend class (its distance and fixed threshold) with a table instead of the network."""

    def __init__(self, table: dict, tag: str, whole: np.ndarray | None = None) -> None:  # no weights needed
        self.fixed = FixedFaces(table, tag, whole)
        self.tag, self.detector, self.align, self.weights_tag = tag, "fixed", True, "table"

    def faces(self, image):
        return self.fixed.faces(image)

    def embed_whole(self, image):
        return self.fixed.embed_whole(image)


E1 = np.array([1.0, 0.0, 0.0])


def test_threshold_040_flips_the_verdict():
    # key 1: cos 0.601 (d = 0.399 <= 0.40) verifies; key 2: cos 0.599 (d = 0.401) does not -> -1
    vgg = FixedVGG({1: unit(0.601), 2: unit(0.599), 9: E1}, "flip")
    r = create_metric("ims_vgg", backend=vgg)(imgs(1, 2), imgs(9))
    assert vgg.threshold == THRESHOLD == 0.40
    assert r.per_image == pytest.approx([0.601, -1.0]) and r.value == pytest.approx((0.601 - 1) / 2)
    assert r.details["verification_rate"] == 0.5 and r.details["verified_mean"] == pytest.approx(0.601)


def test_only_references_within_tau_enter_the_mean():
    # references e1 (d = 0.2 from key 1) and a vector at cos 0.5 to key 1's embedding (d = 0.5): only 0.2 kept
    probe = unit(0.8)
    far = np.array([probe[0] * 0.5 - probe[1] * math.sqrt(0.75), probe[1] * 0.5 + probe[0] * math.sqrt(0.75), 0])
    vgg = FixedVGG({1: probe, 9: E1, 10: far}, "mean")
    assert vgg.dist(probe, far) == pytest.approx(0.5)
    assert create_metric("ims_vgg", backend=vgg)(imgs(1), imgs(9, 10)).per_image == pytest.approx([0.8])


def test_no_face_embeds_whole_image_then_thresholds():
    """MetaCloak's VGG part has no direct no-face penalty (enforce_detection=False): the whole image is
    embedded and the -1 comes from the threshold; a reference without a face is a whole-image row too."""
    near = FixedVGG({4: None, 9: E1}, "whole-near", whole=unit(0.65))
    far = FixedVGG({4: None, 9: E1}, "whole-far", whole=unit(0.55))
    assert create_metric("ims_vgg", backend=near)(imgs(4), imgs(9)).per_image == pytest.approx([0.65])
    r = create_metric("ims_vgg", backend=far)(imgs(4), imgs(9))
    assert r.per_image == [-1.0] and r.n_no_face == 1
    ref_no_face = FixedVGG({1: unit(0.7), 4: None}, "ref-whole", whole=E1)
    r = create_metric("ims_vgg", backend=ref_no_face)(imgs(1), imgs(4))
    assert r.per_image == pytest.approx([0.7]) and r.details["references_without_face"] == 1


def test_paper_ims_combines_ip_and_vgg_with_penalty():
    ip = FixedFaces({1: unit(0.9), 2: unit(0.3), 4: None, 9: E1}, "ip")
    vgg = FixedVGG({1: unit(0.7), 2: unit(0.59), 4: None, 9: E1}, "vgg", whole=unit(0.1))
    ims = create_metric("ims", backend="paper", ip_backend=ip, vgg_backend=vgg)
    assert ims.label == "ims[fixed+vggface]"
    r = ims(imgs(1, 2, 4), imgs(9))
    # 1: both verify; 2: IP cosine 0.3, VGG d = 0.41 -> -1; 4: no face -> IP -1 (policy), VGG whole image -> -1
    assert r.per_image == pytest.approx([0.7 * 0.9 + 0.3 * 0.7, 0.7 * 0.3 - 0.3, -1.0])
    assert r.details["threshold"] == 0.40 and r.details["verification_rate"] == pytest.approx(1 / 3)
    skip = create_metric("ims", backend="paper", ip_backend=ip, vgg_backend=vgg, no_face="skip")(imgs(1, 4), imgs(9))
    assert skip.per_image[1] is None


def _fake_deepface(monkeypatch, version: str, tau: float) -> None:
    """An installed-looking deepface whose find_threshold says ``tau`` (as 0.0.81+ does for VGG-Face)."""
    pkg = types.ModuleType("deepface")
    pkg.DeepFace = types.SimpleNamespace()
    modules = types.ModuleType("deepface.modules")
    verification = types.ModuleType("deepface.modules.verification")
    verification.find_threshold = lambda model, metric: tau
    for mod in (pkg, modules, verification):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda n: version if n == "deepface" else real(n))


def test_threshold_is_040_whatever_deepface_is_installed(monkeypatch, random_model):
    _fake_deepface(monkeypatch, "0.0.93", 0.68)
    backend = VGGFace079(model=random_model, detector="skip")
    assert backend.threshold == 0.40
    with pytest.raises(TypeError):
        VGGFace079(model=random_model, threshold=0.68)  # not a parameter
    with pytest.raises(AttributeError):
        backend.threshold = 0.68  # nor settable
    newer = create_face_backend("deepface")  # the installed deepface: another model, labelled so
    assert newer.name == "deepface-4096d" and newer.threshold == 0.68
    assert create_metric("ims_vgg", backend=newer).label == "ims_vgg[deepface-4096d]"

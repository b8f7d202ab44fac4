"""The image contract: a table of bad and unusual inputs, each with its expected outcome."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cloakbench.images import (
    ImageError, format_budget, load_images, parse_budget, perturbation_norms, quantize, read_images,
    read_rgb, save_images, to_uint8,
)


def _rgb(h=96, w=128, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(path: Path, arr=None) -> Path:
    Image.fromarray(_rgb() if arr is None else arr).save(path)
    return path


# Each builder writes one file into a folder and returns (path, check); check(result) asserts the
# expected outcome, or the string names the error the file must raise.
def corrupt_png(d):
    p = _png(d / "corrupt.png")
    data = bytearray(p.read_bytes())
    data[60:200] = bytes(140)  # smash IDAT data after the header
    p.write_bytes(bytes(data))
    return p, "corrupt or truncated"


def truncated_jpeg(d):
    p = d / "trunc.jpg"
    Image.fromarray(_rgb(256, 256)).save(p, quality=90)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p, "corrupt or truncated"


def text_as_png(d):
    p = d / "notes.png"
    p.write_text("this is not an image\n")
    return p, "not an image"


def tiny_8x8(d):
    return _png(d / "small.png", _rgb(8, 8)), "smaller than the minimum"


def png16(d):
    gray = np.linspace(0, 65535, 96 * 128).reshape(96, 128).astype(np.uint16)
    p = d / "gray16.png"
    Image.fromarray(gray).save(p)  # uint16 array -> 16-bit grayscale PNG

    def check(arr):
        assert arr.shape == (96, 128, 3)
        assert np.allclose(arr[..., 0], gray / 65535.0, atol=1e-6)  # scaled, not clipped at 255
        assert arr.max() == pytest.approx(1.0) and (arr[..., 0] == arr[..., 2]).all()
    return p, check


def rgba(d):
    a = np.zeros((64, 64, 4), dtype=np.uint8)
    a[..., 0] = 255  # red
    a[:, :32, 3] = 0  # left half transparent
    a[:, 32:, 3] = 255
    p = d / "rgba.png"
    Image.fromarray(a, "RGBA").save(p)

    def check(arr):
        assert np.allclose(arr[:, :32], 1.0)  # composited on white
        assert np.allclose(arr[:, 32:], [1.0, 0.0, 0.0])
    return p, check


def cmyk_jpeg(d):
    p = d / "cmyk.jpg"
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(p, quality=95)  # pure red in CMYK

    def check(arr):
        assert arr.shape == (64, 64, 3)
        r, g, b = arr.reshape(-1, 3).mean(0)
        assert r > 0.9 and g < 0.1 and b < 0.1, (r, g, b)
    return p, check


def exif_rotated(d):
    img = np.zeros((40, 80, 3), dtype=np.uint8)  # stored landscape 80 wide x 40 high
    img[:, :40] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    p = d / "rotated.jpg"
    Image.fromarray(img).save(p, exif=exif, quality=95)

    def check(arr):
        assert arr.shape == (80, 40, 3)  # displayed portrait
        assert arr[:35].mean() > 0.9 and arr[45:].mean() < 0.1  # white half now on top
    return p, check


def grayscale(d):
    p = d / "gray.png"
    Image.fromarray(np.full((64, 64), 128, dtype=np.uint8), "L").save(p)
    return p, lambda arr: np.testing.assert_allclose(arr, 128 / 255, atol=1e-6)


def palette(d):
    p = d / "pal.png"
    Image.fromarray(_rgb(64, 64)).convert("P", palette=Image.Palette.ADAPTIVE).save(p)
    return p, lambda arr: (arr.shape == (64, 64, 3)) or pytest.fail("shape")


def webp_lossless(d):
    a = _rgb(64, 64)
    p = d / "img.webp"
    Image.fromarray(a).save(p, lossless=True)
    return p, lambda arr: np.testing.assert_allclose(arr, a / 255.0, atol=1e-6)


CASES = [corrupt_png, truncated_jpeg, text_as_png, tiny_8x8, png16, rgba, cmyk_jpeg, exif_rotated, grayscale,
         palette, webp_lossless]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_input_table(tmp_path, case):
    path, expect = case(tmp_path)
    if isinstance(expect, str):
        with pytest.raises(ImageError) as err:
            read_rgb(path, min_size=16)
        assert str(path) in str(err.value) and expect in str(err.value)
    else:
        arr = read_rgb(path, min_size=16)
        assert arr.dtype == np.float32 and 0.0 <= arr.min() and arr.max() <= 1.0
        expect(arr)


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ImageError, match="empty folder") as err:
        load_images(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_missing_folder(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_images(tmp_path / "nope")


def test_every_bad_file_listed_and_good_ones_kept(tmp_path):
    for i in range(3):
        _png(tmp_path / f"good{i}.png", _rgb(seed=i))
    bad = [text_as_png(tmp_path)[0], truncated_jpeg(tmp_path)[0], tiny_8x8(tmp_path)[0]]
    with pytest.raises(ImageError) as err:
        read_images(tmp_path, 64)
    assert set(err.value.problems) == set(bad)
    skipped = read_images(tmp_path, 64, on_error="skip")
    assert skipped.images.shape == (3, 3, 64, 64) and set(skipped.problems) == set(bad)
    assert [p.name for p in skipped.paths] == ["good0.png", "good1.png", "good2.png"]


def test_resize_center_crop_policy(tmp_path):
    a = np.zeros((100, 200, 3), dtype=np.uint8)
    a[:, 50:150] = 255  # central square white, sides black
    x = load_images([_png(tmp_path / "wide.png", a)], size=50)
    assert x.shape == (1, 3, 50, 50) and x.dtype == torch.float32
    assert x[..., 1:-1].min() > 0.99  # the center crop keeps only the white middle
    assert x.max() <= 1.0 and x[..., 0].min() > 0.8  # only antialiasing touches the edge column


def test_save_rounds_not_truncates_and_roundtrips(tmp_path):
    x = torch.full((1, 3, 4, 4), 0.999)  # 254.745 -> 255 when rounded, 254 when truncated
    x[0, 0, 0, 0] = 0.5 / 255 - 1e-4  # rounds down to 0
    x[0, 1, 0, 0] = 1.5 / 255 + 1e-4  # rounds up to 2
    assert to_uint8(x)[0, 0, 0].tolist() == [0, 2, 255]
    paths = save_images(x, tmp_path, names=["a.jpg"])
    assert paths == [tmp_path / "a.png"]
    back = load_images(paths, size=None, min_size=None)
    assert torch.equal(back, quantize(x))
    assert not list(tmp_path.glob(".*"))  # no temp files left


def test_save_rejects_out_of_range(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        save_images(torch.full((1, 3, 4, 4), 1.5), tmp_path)


def test_budget_measured_after_quantization():
    clean = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    clean = quantize(clean)
    delta = torch.zeros_like(clean)
    delta[0, 0, 0, 0] = 8 / 255
    delta[1, 2, 3, 3] = -4.4 / 255  # measured as 4/255 after 8-bit rounding
    prot = (clean + delta).clamp(0, 1)
    d = perturbation_norms(clean, prot)
    assert d.linf_255.tolist() == pytest.approx([8.0, 4.0], abs=1e-4)
    assert d.l2_255.tolist() == pytest.approx([8.0, 4.0], abs=1e-4)  # one changed pixel each
    raw = perturbation_norms(clean, prot, measured=False)
    assert raw.linf_255[1].item() == pytest.approx(4.4, abs=1e-4)  # unquantized differs
    assert d.summary()["linf_max_255"] == pytest.approx(8.0, abs=1e-4)


def test_parse_and_format_budget():
    assert parse_budget("8/255") == pytest.approx(8 / 255)
    assert parse_budget("0.0314") == pytest.approx(0.0314)
    assert parse_budget(0.05) == 0.05
    for bad in ("0", "2", 2, "-1/255"):
        with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
            parse_budget(bad)
    assert format_budget(8 / 255) == "8/255" and format_budget(0.05) == "12.75/255"
    with pytest.raises(ValueError, match="k/255"):
        parse_budget("eight")


@pytest.mark.data
def test_real_faces_load(shared_data):
    clean = read_images(shared_data / "faces/vggface2/id1/clean")
    prot = read_images(shared_data / "faces/vggface2/id1/protected-metacloak")
    assert clean.images.shape == (4, 3, 512, 512)
    d = perturbation_norms(clean.images, prot.images)
    # MetaCloak's authors protected these at L-inf 11/255 (shared/data/README.md).
    assert 8 <= d.summary()["linf_max_255"] <= 11.0 + 1e-3

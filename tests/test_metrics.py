"""Metrics: hand-computed formulas, statistics, fidelity cross-checks, BRISQUE ordering, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cloakbench.metrics import avg_score, create_metric, expected_avg, liqe_prime, list_metrics, mean_std, q_score, sign_flip_test, wilcoxon
from cloakbench.metrics.face_backends import Face, FaceBackend


class FakeFaces(FaceBackend):
    """Embeddings chosen per image by its mean red value (k/255): a table instead of a detector."""

    name = "fake"
    distance = "cosine"

    def __init__(self, table: dict[int, np.ndarray | None], threshold: float = 0.4) -> None:
        self.table, self.threshold = table, threshold

    def _key(self, image):
        return int(round(float(image[..., 0].mean())))

    def faces(self, image):
        emb = self.table[self._key(image)]
        return [] if emb is None else [Face((0, 0, 10, 10), 0.9, emb)]

    def embed_whole(self, image):
        return np.array([0.0, 0.0, 1.0])


def imgs(*keys: int) -> torch.Tensor:
    x = torch.zeros(len(keys), 3, 8, 8)
    for i, k in enumerate(keys):
        x[i, 0] = k / 255
    return x


E = {1: np.array([1.0, 0.0, 0.0]), 2: np.array([0.6, 0.8, 0.0]), 3: np.array([0.0, 1.0, 0.0]), 4: None,
     10: np.array([1.0, 0.0, 0.0]), 11: np.array([0.8, 0.6, 0.0])}


def test_ism_skips_undetected_faces_and_empty_policy():
    fake = FakeFaces(E)
    refs = imgs(10, 11)  # e_bar = (0.9, 0.3, 0) -> unit (0.94868, 0.31623, 0)
    r = create_metric("ism", backend=fake)(imgs(1, 2, 4), refs)
    c1, c2 = 0.9 / np.sqrt(0.9), (0.54 + 0.24) / np.sqrt(0.9)
    assert r.per_image[0] == pytest.approx(c1) and r.per_image[1] == pytest.approx(c2) and r.per_image[2] is None
    assert r.value == pytest.approx((c1 + c2) / 2) and r.n_no_face == 1 and r.name == "ism[fake]"
    penal = create_metric("ism", backend=fake, no_face="-1")(imgs(1, 2, 4), refs)
    assert penal.value == pytest.approx((c1 + c2 - 1) / 3)
    assert create_metric("ism", backend=fake)(imgs(4, 4), refs).value is None
    assert create_metric("ism", backend=fake, empty="zero")(imgs(4, 4), refs).value == 0.0


def test_fdfr():
    r = create_metric("fdfr", backend=FakeFaces(E))(imgs(1, 4, 4, 2))
    assert r.value == 0.5 and r.per_image == [0.0, 1.0, 1.0, 0.0] and r.higher_better is False


def test_ims_thresholded_penalty_logic():
    fake = FakeFaces(E, threshold=0.4)
    refs = imgs(10, 11)
    r = create_metric("ims_vgg", backend=fake)(imgs(1, 3, 4), refs)
    # image 1: d = (0, 1-0.8=0.2) both kept -> 1 - 0.1 = 0.9
    # image 3: d = (1, 1-0.6=0.4) -> only 0.4 kept (<= tau) -> 0.6
    # image 4: no face -> whole image (0,0,1): d = (1, 1) none kept -> -1
    assert r.per_image == pytest.approx([0.9, 0.6, -1.0])
    assert r.value == pytest.approx((0.9 + 0.6 - 1) / 3)
    assert r.details["verification_rate"] == pytest.approx(2 / 3) and r.details["verified_mean"] == pytest.approx(0.75)


def test_ims_combination_lambda():
    fake = FakeFaces(E, threshold=0.4)
    ims = create_metric("ims", backend=fake)
    assert ims.ip is fake and ims.thr is fake and ims.label == "ims[fake]"
    r = ims(imgs(1, 4), imgs(10, 11))
    ip1 = (1.0 + 0.8) / 2  # mean cosine of image 1 to the two references
    assert r.per_image == pytest.approx([0.7 * ip1 + 0.3 * 0.9, 0.7 * -1 + 0.3 * -1])
    assert r.details["ims_ip"] == pytest.approx((ip1 - 1) / 2)


def test_q_avg_expected_avg_hand_values():
    assert liqe_prime(1.0) == -1.0 and liqe_prime(5.0) == 1.0 and liqe_prime(3.0) == 0.0
    assert q_score(4.0, 0.2) == pytest.approx(0.5 * 0.5 + 0.5 * 0.2)
    assert avg_score(-0.13, 0.35) == pytest.approx(0.11)
    assert expected_avg(0.2, 0.6) == pytest.approx(0.4) and expected_avg(0.2, 0.6, 1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        expected_avg(0, 0, 1.5)


def test_mean_std_and_wilcoxon():
    assert mean_std([1.0, 2.0, 3.0, None, float("nan")]) == (2.0, 1.0, 3)
    a = np.arange(12, dtype=float)
    b = a + np.linspace(0.5, 2.0, 12)
    t = wilcoxon(b, a)
    assert t["n"] == 12 and t["p_value"] < 0.01 and t["significant"]
    assert wilcoxon(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError):
        wilcoxon([1, 2], [1])


def test_sign_flip_test_exact_values_and_pairing_size():
    """Exact p by hand: 4 same-sign pairs -> only the 2 all-same patterns reach |mean| -> 2/16; 8 -> 2/256."""
    t4 = sign_flip_test([1, 2, 3, 4], [0, 0, 0, 0])
    assert t4["p_value"] == pytest.approx(2 / 16) and not t4["significant"]  # 4 identities never reach 0.01
    t8 = sign_flip_test([1, 2, 3, 4, 5, 6, 7, 8], [0] * 8)
    assert t8["p_value"] == pytest.approx(2 / 256) and t8["significant"] and "exact" in t8["method"]
    # one pair against the rest: |mean| of (+1, +1, +1, -3) = 0; patterns reaching 0 are all 16
    assert sign_flip_test([1, 1, 1, -3], [0] * 4)["p_value"] == pytest.approx(1.0)
    # d = (1, 1, 1, 2): |sum| >= 5 for the 2 all-same patterns only; flipping one 1 gives 3 -> p = 2/16
    assert sign_flip_test([1, 1, 1, 2], [0] * 4)["p_value"] == pytest.approx(2 / 16)
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 1.0, 128)
    big = sign_flip_test(a, np.zeros(128))
    assert big["significant"] and "random" in big["method"]
    assert sign_flip_test(rng.normal(0, 1, 128), np.zeros(128))["p_value"] > 0.01
    assert sign_flip_test(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError):
        sign_flip_test([1, 2], [1])


def test_report_marks_significance_paired_per_image(tmp_path):
    """4 identities x 1 seed: per cell too few pairs for p <= 0.01; 4 x 8 images paired per file are enough,
    and an unpaired shift (different files) gives no mark."""
    import json

    from cloakbench.bench.report import build, paired_images
    from cloakbench.bench.store import write_rows

    art = tmp_path / "artifacts"
    rows, folders = [], {}
    for pur, shift in (("none", 0.0), ("codesr", 0.05), ("jpeg", 0.05)):
        for i in range(4):
            h = f"{pur}{i}"
            base = [0.1 * k + 0.01 * i for k in range(8)]
            vals = {f"p0-{k:03d}.png": v + shift + (0.001 * k if pur == "codesr" else 0.0) for k, v in enumerate(base)}
            if pur == "jpeg":  # the same values under other names: nothing to pair with
                vals = {k.replace("p0-", "p1-"): v for k, v in vals.items()}
            folder = art / f"evaluate-{h}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps({"ism[dlib]": {"per_image": vals}}))
            (folder / "DONE.json").write_text(json.dumps({"hash": h, "spec": {"kind": "evaluate", "labels": {}, "inputs": {"images": "x"}},
                                                          "outputs": {}}))
            folders[h] = folder
            rows.append({"spec_hash": h, "metric": "ism[dlib]", "value": sum(vals.values()) / 8, "n": 8, "n_no_face": 0,
                         "identity": f"id{i}", "protection": "advdm", "purification": pur, "recipe": "db", "qes": 0,
                         "seed": 0, "details": {}, "provenance": {}})
    write_rows(tmp_path / "results.sqlite", rows)
    pairs = paired_images(rows, folders)
    assert len(pairs[(("advdm", "codesr", "db", 0), "ism[dlib]")]) == 32
    html = build(tmp_path).read_text()
    start = html.index('<table id="results">')
    table = html[start:html.index("</table>", start)]
    codesr, jpeg = (r for r in table.split("<tr>") if "codesr" in r), (r for r in table.split("<tr>") if "jpeg" in r)
    assert " *" in next(codesr) and " *" not in next(jpeg)


def test_psnr_ssim_against_skimage():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 48, 40, generator=g)
    b = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    ps = create_metric("psnr")(b, a)
    ss = create_metric("ssim")(b, a)
    for i in range(2):
        x, y = a[i].permute(1, 2, 0).double().numpy(), b[i].permute(1, 2, 0).double().numpy()
        assert ps.per_image[i] == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1.0), rel=1e-4)
        ref = structural_similarity(x, y, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
        assert ss.per_image[i] == pytest.approx(ref, abs=2e-4)
    with pytest.raises(ValueError, match="paired"):
        create_metric("ssim")(a, a[:1])


def test_budget_metrics_in_k255():
    a = torch.full((2, 3, 8, 8), 100 / 255)
    b = a.clone()
    b[0, 0, 0, 0] += 6 / 255
    b[1, 1, 2, 2] -= 3 / 255
    assert create_metric("linf")(b, a).value == pytest.approx(6.0, abs=1e-3)
    assert create_metric("l2")(b, a).per_image == pytest.approx([6.0, 3.0], abs=1e-3)


def test_registry_metadata_and_names():
    names = set(list_metrics())
    assert {"ism", "fdfr", "ims", "ims_vgg", "ims_ip", "detection_score", "brisque", "liqe", "clip_iqac", "q",
            "psnr", "ssim", "lpips", "linf", "l2"} <= names
    from cloakbench.metrics import METRICS

    assert METRICS.get("fdfr").meta["higher_better"] is False and METRICS.get("ism").meta["needs_reference"]
    with pytest.raises(ValueError):
        create_metric("ism[")
    assert create_metric("ism[dlib]").label == "ism[dlib]"


def _astronaut() -> torch.Tensor:
    from skimage import data

    return torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255


def test_brisque_orders_degradations():
    import io

    from PIL import Image, ImageFilter

    from cloakbench.images import to_pil

    clean = _astronaut()
    pil = to_pil(clean)[0]
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=10)
    jpeg = torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    blur = torch.from_numpy(np.array(pil.filter(ImageFilter.GaussianBlur(3)))).permute(2, 0, 1)[None].float() / 255
    noise = (clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    m = create_metric("brisque")
    s = {k: m(v).value for k, v in {"clean": clean, "jpeg10": jpeg, "blur3": blur, "noise25": noise}.items()}
    assert m.label == "brisque[pkg]" and s["clean"] == pytest.approx(10.8, abs=0.5)  # docs/METRICS.md §4
    assert s["clean"] < s["jpeg10"] and s["clean"] < s["blur3"] and s["clean"] < s["noise25"], s


def test_avg_combines_ims_and_q_per_image():
    """Avg = (IMS + Q) / 2 per image (None where either part is None), the cell value their mean."""
    from cloakbench.metrics import MetricResult

    avg = create_metric("avg[dlib]")
    assert avg.ims_name == "ims[dlib]" and avg.needs_reference
    ims = MetricResult("ims[dlib]", 0.1, [0.5, -1.0, None], True, backend="dlib")
    q = MetricResult("q", 0.2, [0.1, 0.3, 0.2], True, backend="clip")
    r = avg.combine(ims, q)
    assert r.per_image == [pytest.approx(0.3), pytest.approx(-0.35), None]
    assert r.value == pytest.approx((0.3 - 0.35) / 2) and r.name.startswith("avg")
    with pytest.raises(ValueError, match="avg"):
        avg.combine(ims, MetricResult("q", 0.0, [0.0], True))

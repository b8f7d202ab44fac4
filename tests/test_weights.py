"""Weights manager against a local HTTP server on 127.0.0.1 serving a generated file."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest

from cloakbench import weights


@pytest.fixture()
def server(tmp_path):
    """A loopback HTTP server over a folder holding one generated file."""
    root = tmp_path / "srv"
    root.mkdir()
    payload = os.urandom(3 * weights.CHUNK + 123)  # several chunks
    (root / "model.bin").write_bytes(payload)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", payload
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def spec_factory():
    names = []

    def make(url, sha, name="test-file"):
        names.append(name)
        return weights.register_weight(weights.WeightSpec(name, url, sha, None, "test", "tests", "model.bin"))

    yield make
    for n in names:
        weights.unregister_weight(n)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_checksum_file_present(server, spec_factory, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    url, payload = server
    spec_factory(f"{url}/model.bin", hashlib.sha256(payload).hexdigest())
    with pytest.raises(weights.MissingWeightError):
        weights.resolve("test-file")
    seen = []
    path = weights.fetch("test-file", progress=lambda done, total: seen.append(done))
    assert path.read_bytes() == payload and weights.resolve("test-file") == path
    assert seen[-1] == len(payload) and len(seen) >= 4
    assert weights.verify("test-file")
    assert _leftovers(path.parent) == ["model.bin"]  # no temp file next to it
    path.write_bytes(b"corrupt")  # present is not the same as good (#37 item 5)
    with pytest.raises(weights.ChecksumError, match="present but its sha256"):
        weights.fetch("test-file")
    assert not weights.verify("test-file")
    assert weights.fetch("test-file", force=True).read_bytes() == payload


def test_bad_checksum_leaves_nothing(server, spec_factory, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    url, _ = server
    spec_factory(f"{url}/model.bin", "0" * 64)
    with pytest.raises(weights.ChecksumError, match="checksum mismatch"):
        weights.fetch("test-file")
    assert _leftovers(weights.home() / "weights") == []
    assert not weights.is_present("test-file")


def test_http_error_is_missing_weight(server, spec_factory, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    url, _ = server
    spec_factory(f"{url}/absent.bin", "0" * 64)
    with pytest.raises(weights.MissingWeightError, match="download failed"):
        weights.fetch("test-file")
    assert _leftovers(weights.home() / "weights") == []


def test_offline_gives_clear_error_without_network(spec_factory, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec_factory("http://127.0.0.1:9/never-contacted.bin", "0" * 64)
    with pytest.raises(weights.MissingWeightError) as err:
        weights.fetch("test-file")
    msg = str(err.value)
    assert "offline" in msg and str(weights.path_of("test-file")) in msg
    assert "cloakbench weights fetch test-file" in msg


def test_missing_real_entry_names_path_and_command():
    with pytest.raises(weights.MissingWeightError) as err:
        weights.resolve("codeformer")
    msg = str(err.value)
    assert "codeformer.pth" in msg and "cloakbench weights fetch codeformer" in msg and "1009e537" in msg


def test_registry_entries_are_well_formed():
    for spec in weights.list_specs():
        assert spec.url.startswith("https://") and spec.licence and spec.used_by
        assert spec.sha256 == "" or (len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0)
    unverified = [s.name for s in weights.list_specs() if not s.sha256]
    with pytest.raises(weights.WeightError, match="allow-unverified"):
        weights.fetch(unverified[0])


def test_unknown_name():
    with pytest.raises(KeyError, match="unknown weight"):
        weights.get_spec("nope")

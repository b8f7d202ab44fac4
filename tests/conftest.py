"""Test configuration. Offline always: HF_HUB_OFFLINE is set before anything imports huggingface_hub."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--runslow") or os.environ.get("CLOAKBENCH_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow: use --runslow or CLOAKBENCH_SLOW=1")
    skip_gpu = pytest.mark.skip(reason="gpu: CUDA is not available")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real images of ../shared/data (or $CLOAKBENCH_TEST_DATA); skips when absent."""
    from cloakbench.testing.shared_data import test_data_dir

    path = test_data_dir()
    if path is None:
        pytest.skip("shared test data not found: set CLOAKBENCH_TEST_DATA or place shared/data beside the project")
    return path


@pytest.fixture(scope="session")
def tiny_model():
    """One tiny random SD bundle per session (read-only use: tests must not train it)."""
    from cloakbench.models import build_tiny

    return build_tiny()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test sees an empty CLOAKBENCH_HOME unless it sets its own."""
    monkeypatch.setenv("CLOAKBENCH_HOME", str(tmp_path_factory.mktemp("home")))

"""The README's Python example runs as written (on generated photos, with the tiny model)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def run_in(tmp_path, monkeypatch, code: str) -> None:
    """Run README code in ``tmp_path`` beside a ``photos/`` folder of two random 96 x 80 photos."""
    (tmp_path / "photos").mkdir()
    for i in range(2):
        arr = np.random.default_rng(i).integers(0, 256, (80, 96, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / "photos" / f"p{i}.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    run_in(tmp_path, monkeypatch, code)
    assert sorted(p.name for p in (tmp_path / "protected").iterdir()) == ["00000.png", "00001.png"]
    printed = capsys.readouterr().out
    linf = float(re.search(r"'linf_max_255': ([0-9.]+)", printed).group(1))
    assert 7.5 <= linf <= 8.5  # the step is 8/255; measured after rounding


def test_readme_stages_example_runs(tmp_path, monkeypatch, capsys):
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[1]
    assert "stages.protect" in code
    run_in(tmp_path, monkeypatch, code)
    assert sorted(p.name for p in (tmp_path / "protected").glob("*.png")) == ["p0.png", "p1.png"]
    assert sorted(p.name for p in (tmp_path / "purified").iterdir()) == ["p0.png", "p1.png", "purification.json"]
    assert 1 <= float(capsys.readouterr().out.strip()) <= 8  # measured on the saved PNGs

"""Mini-world photos on disk, for everything that reads image folders (bench, CLI, tests)."""

from __future__ import annotations

from pathlib import Path

from . import world


def world_root(seed: int = 0) -> Path:
    from ...weights import home

    return home() / "world" / f"seed{seed}"


def materialize(subjects: list[int], photos: int, seed: int = 0, root: str | Path | None = None) -> tuple[Path, list[str]]:
    """Write ``photos`` PNGs of each subject to ``<root>/subject<index>/clean/NN.png`` (once: existing
    complete folders are kept; files are written atomically). Returns ``(root, identity names)``."""
    from ...images import save_images

    root = Path(root) if root is not None else world_root(seed)
    names = []
    for s in subjects:
        name = f"subject{s:03d}"
        folder = root / name / "clean"
        stems = [f"{i:02d}" for i in range(photos)]
        if not all((folder / f"{st}.png").is_file() for st in stems):
            save_images(world.photos(s, photos, seed), folder, stems)
        names.append(name)
    return root, names

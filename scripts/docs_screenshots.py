"""Copy the screenshots the UI tests save (test-artifacts/) to docs/ for the README, as small PNGs.

Usage: .venv/bin/python -m pytest tests/ui && .venv/bin/python scripts/docs_screenshots.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = {"report.png": "report.png", "asset-graph.png": "asset-graph.png", "launchpad.png": "launchpad.png"}
MAX_BYTES = 300_000


def shrink(source: Path, target: Path) -> int:
    """Write `source` as a 256-colour PNG (screenshots are mostly flat colour); returns its size."""
    with Image.open(source) as image:
        palette = image.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    palette.save(target, format="PNG", optimize=True)
    return target.stat().st_size


def main() -> int:
    missing = [name for name in SCREENSHOTS if not (PROJECT_ROOT / "test-artifacts" / name).is_file()]
    if missing:
        print(
            f"missing in test-artifacts/: {', '.join(missing)}; run `.venv/bin/python -m pytest tests/ui` first",
            file=sys.stderr,
        )
        return 1
    for source_name, target_name in SCREENSHOTS.items():
        target = PROJECT_ROOT / "docs" / target_name
        size = shrink(PROJECT_ROOT / "test-artifacts" / source_name, target)
        print(f"{target.relative_to(PROJECT_ROOT)}: {size / 1000:.0f} kB")
        if size > MAX_BYTES:
            print(f"{target_name} is over {MAX_BYTES / 1000:.0f} kB; take a smaller screenshot", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

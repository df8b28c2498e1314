"""Locate ../shared/assets for tests: skip locally when absent, fail under CI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "assets"
PROXY_MODEL = "models/efficientvit_b0_imagenette.pt"
IMAGENETTE = "data/imagenette"


def assets_dir() -> Path:
    """Return the assets folder, or fail (CI set) / skip (otherwise) when it is missing."""
    path = Path(os.environ.get("TRIOVIT_ASSETS", DEFAULT))
    if (path / PROXY_MODEL).is_file() and (path / IMAGENETTE / "val").is_dir():
        return path
    msg = f"real assets not found at {path} (expected {PROXY_MODEL} and {IMAGENETTE}/val)"
    if os.environ.get("CI"):
        pytest.fail(msg + "; CI must run with ../shared beside the checkout")
    pytest.skip(msg)

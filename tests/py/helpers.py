"""Paths shared by the Python tests."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOP_DIR = REPO_ROOT / "examples" / "shop"

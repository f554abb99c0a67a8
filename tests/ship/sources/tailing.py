"""Helpers for the tail tests: one file input over ``<tmp>/logs`` into a file output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.ship.helpers import read_ndjson, ship_config


def url_config(tmp_path: Path, url: str, **extra: Any) -> Any:
    return ship_config(
        inputs=[url],
        outputs=[f"file://{tmp_path}/out.ndjson"],
        state_dir=str(tmp_path / "state"),
        **extra,
    )


def cfg_for(tmp_path: Path, **extra: Any) -> Any:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return ship_config(
        inputs=[f"file://{tmp_path}/logs/*.log"],
        outputs=[f"file://{tmp_path}/out.ndjson"],
        state_dir=str(tmp_path / "state"),
        **extra,
    )


def out(tmp_path: Path) -> list[dict[str, Any]]:
    return read_ndjson(tmp_path / "out.ndjson")


def messages(tmp_path: Path) -> list[str]:
    return [r["message"] for r in out(tmp_path)]

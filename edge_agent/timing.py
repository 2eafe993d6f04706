"""Rotation period and code step set by central (the set_timing command), kept in the state
dir so that they outlive a restart; they take precedence over the settings file."""

from __future__ import annotations

import json
import logging
import pathlib

from edge_agent.protocol import command

log = logging.getLogger(__name__)
FILE_NAME = "timing.json"


def load(state_dir: pathlib.Path) -> dict[str, int]:
    path = state_dir / FILE_NAME
    try:
        data = json.loads(path.read_text())
        return command.check_args("set_timing", data)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("%s ignored: %s", path, exc)
        return {}


def save(state_dir: pathlib.Path, timing: dict[str, int]) -> None:
    merged = {**load(state_dir), **timing}
    path = state_dir / FILE_NAME
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(merged))
    temporary.replace(path)

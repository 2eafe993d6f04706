"""One log format for the agent and central: a line per event on stderr, which journald keeps."""

from __future__ import annotations

import logging
import sys


def configure(level: str) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

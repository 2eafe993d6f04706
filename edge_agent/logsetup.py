"""One log format for the agent and central, on stderr, which journald keeps: a text line per
event, or (log_format = "json") one JSON object per line with the time, level, logger and
message plus the event's own fields (request_id, site, device, ...) for log pipelines."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger import json as jsonlog

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            jsonlog.JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)

"""Logging set-up of the gateway's processes: one line per event, text or JSON, no PHI.

Used by ``edge-gateway`` (the coordinator) and by each receiver process, which
configures its own handlers after the fork.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from edge_gateway.config import GatewayConfig


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the routing extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object; ``series``, ``part``, ``sop`` and ``aet`` extras included."""
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("series", "part", "sop", "aet"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(config: GatewayConfig) -> None:
    """Send every record to stderr in ``config.log_format`` (``text`` or ``json``) at ``config.log_level``."""
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)
    # pynetdicom logs every association at INFO; keep its warnings only.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)

"""One readable log stream for ``make run``: ``time level [component] message key=value``."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

# Attributes every LogRecord has; anything else came from ``extra=`` and is worth printing.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_POWERTOOLS = {
    "xray_trace_id",
    "cold_start",
    "function_name",
    "function_memory_size",
    "function_arn",
    "function_request_id",
    "correlation_id",
    "sampling_rate",
    "service",
    "location",
    "timestamp",
}
COMPONENTS = {
    "local_cloud.moto": "cloud",
    "local_cloud.ingest": "ingest",
    "local_cloud.api": "api",
    "local_cloud": "local",
    "edge_gateway": "gateway",
}


class ReadableFormatter(logging.Formatter):
    def __init__(self, component: str | None = None) -> None:
        super().__init__(datefmt="%H:%M:%S")
        self._component = component

    def format(self, record: logging.LogRecord) -> str:
        component = self._component or next(
            (c for prefix, c in COMPONENTS.items() if record.name.startswith(prefix)), record.name
        )
        extras = {
            k: v
            for k, v in vars(record).items()
            if k not in _STANDARD and k not in _POWERTOOLS and not k.startswith("_")
        }
        line = _line(self.formatTime(record, self.datefmt), record.levelname, component, record.getMessage())
        if extras:
            line += " " + " ".join(f"{k}={_short(v)}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _line(when: str, level: str, component: str, message: str) -> str:
    return f"{when} {level:<7} [{component}] {message}"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ReadableFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("pynetdicom", "botocore", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class FunctionFormatter(LambdaPowertoolsFormatter):
    """Powertools' structured record, printed as one readable line.

    Both functions share one Powertools logger in this process; the thread tells which ran.
    """

    def format(self, record: logging.LogRecord) -> str:
        data = json.loads(super().format(record))
        component = "ingest" if (record.threadName or "").startswith("ingest") else "query"
        extras = {
            k: v
            for k, v in data.items()
            if k not in _POWERTOOLS | {"level", "message", "exception", "exception_name", "stack_trace"}
        }
        line = _line(
            self.formatTime(record, "%H:%M:%S"), record.levelname, component, data.get("message", "")
        )
        if extras:
            line += " " + " ".join(f"{k}={_short(v)}" for k, v in extras.items())
        if data.get("exception"):
            line += "\n" + str(data["exception"])
        return line


def adopt_powertools(powertools_logger: Any) -> None:
    """Print the handlers' Powertools (JSON) logs in the same readable form."""
    powertools_logger.registered_handler.setFormatter(FunctionFormatter())
    powertools_logger.registered_handler.setLevel(logging.INFO)

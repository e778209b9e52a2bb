"""One readable log stream for ``make run``: ``time level [component] message key=value``.

What a person does not need on the console goes to files under ``<data dir>/logs/``:
CloudWatch EMF metric blobs (``metrics.log``, as CloudWatch keeps them apart from the
log lines) and library warnings such as pydicom's about odd values (``warnings.log``).
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from pathlib import Path
from typing import IO, Any

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
    """One readable line per record: time, level, component and the record's extras."""

    def __init__(self, component: str | None = None) -> None:
        super().__init__(datefmt="%H:%M:%S")
        self._component = component

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line (plus the traceback, when there is one)."""
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


METRICS_LOG = "metrics.log"
WARNINGS_LOG = "warnings.log"
# Loggers whose records are about the data, not the system: a console line each would bury the events.
_TO_WARNINGS_LOG = ("py.warnings", "pydicom")


def configure(level: int = logging.INFO, log_dir: Path | None = None) -> None:
    """Readable lines on stderr; with ``log_dir``, EMF metrics and library warnings go to files there.

    Creates ``log_dir`` when given. Safe to call again (handlers are replaced, not added).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ReadableFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("pynetdicom", "botocore", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if log_dir is None:
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    logging.captureWarnings(True)  # warnings.warn (pydicom's validation) -> the "py.warnings" logger
    to_file = logging.FileHandler(log_dir / WARNINGS_LOG, encoding="utf-8")
    to_file.setFormatter(ReadableFormatter())
    for name in _TO_WARNINGS_LOG:
        quiet = logging.getLogger(name)
        quiet.handlers[:] = [to_file]
        quiet.propagate = False
    if not isinstance(sys.stdout, MetricsSplitter):
        sys.stdout = MetricsSplitter(sys.stdout, log_dir / METRICS_LOG)


class MetricsSplitter(io.TextIOBase):
    """stdout that sends CloudWatch EMF lines (``{"_aws": ...}``) to a file, everything else on.

    Powertools prints EMF blobs with ``print``; in Lambda CloudWatch turns them into metrics
    and keeps them out of the way. Here they would fill the console with 100-value arrays.
    """

    def __init__(self, console: IO[str], path: Path) -> None:
        super().__init__()
        self._console = console
        self._path = path
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        """Always True: this is an output stream."""
        return True

    def write(self, text: str) -> int:
        """Write ``text``: complete EMF lines to the metrics file, other lines to the console."""
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                if line.startswith('{"_aws"'):
                    with open(self._path, "a", encoding="utf-8") as metrics:
                        metrics.write(line + "\n")
                else:
                    self._console.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        """Write out a pending partial line (unless it is EMF) and flush the console."""
        with self._lock:
            if self._pending and not self._pending.startswith('{"_aws"'):
                self._console.write(self._pending)
                self._pending = ""
            self._console.flush()

    def isatty(self) -> bool:
        """Whether the console is a terminal."""
        return self._console.isatty()


class FunctionFormatter(LambdaPowertoolsFormatter):
    """Powertools' structured record, printed as one readable line.

    Both functions share one Powertools logger in this process; the thread tells which ran.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The Powertools record as one readable line, marked ingest or query by its thread."""
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

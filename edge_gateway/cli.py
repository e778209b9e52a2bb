"""``edge-gateway``: run the gateway, or show what it holds.

edge-gateway run --config /etc/edge-gateway/edge-gateway.toml
edge-gateway status --config /etc/edge-gateway/edge-gateway.toml [--json]
edge-gateway import --config /etc/edge-gateway/edge-gateway.toml DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edge_gateway.config import ConfigError, GatewayConfig, load

log = logging.getLogger("edge_gateway")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-gateway", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the gateway"),
        ("status", "show spool, outbox and last upload"),
        ("import", "spool existing DICOM files (a folder, recursively) for upload"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", type=Path, help="TOML configuration file")
        cmd.add_argument("--spool-dir", type=Path)
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="print JSON")
            continue
        if name == "import":
            cmd.add_argument("folder", type=Path, help="folder of DICOM files (read recursively, left as is)")
            continue
        cmd.add_argument("--host")
        cmd.add_argument("--port", type=int)
        cmd.add_argument("--ae-title")
        cmd.add_argument("--allowed-calling-aets", help="comma-separated; empty accepts any")
        cmd.add_argument("--stable-after", type=float, help="quiet seconds that close a series")
        cmd.add_argument("--bucket")
        cmd.add_argument("--endpoint-url", help="S3 endpoint (the local stand-in)")
        cmd.add_argument("--gateway-id")
        cmd.add_argument("--log-format", choices=("text", "json"))
        cmd.add_argument("--fast-path", choices=("true", "false"), help="false: stock pynetdicom")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "host",
        "port",
        "ae_title",
        "allowed_calling_aets",
        "stable_after",
        "bucket",
        "endpoint_url",
        "gateway_id",
        "log_format",
        "spool_dir",
        "fast_path",
    )
    return {name: getattr(args, name, None) for name in names}


def run(config: GatewayConfig) -> int:
    from edge_gateway.gateway import Gateway

    configure_logging(config)
    gateway = Gateway(config)
    gateway.start()
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "gateway %s ready: series close after %.0f s quiet, uploading to s3://%s",
        config.gateway_id,
        config.stable_after,
        config.bucket,
    )
    while not stopping.wait(1):
        pass
    gateway.stop()
    return 0


def status(config: GatewayConfig, as_json: bool) -> int:
    from edge_gateway.gateway import STATUS_FILE, spool_status
    from edge_gateway.spool import Spool

    spool = Spool(config.spool_dir, config.max_spool_bytes)
    result: dict[str, Any] = spool_status(spool)
    status_file = spool.root / STATUS_FILE
    if status_file.exists():
        last = spool.read_json(status_file)
        for key in (
            "uploaded_parts",
            "last_upload",
            "last_error",
            "last_error_at",
            "pid",
            "written_at",
        ):
            result[key] = last.get(key)
    if as_json:
        print(json.dumps(result, indent=1))
        return 0
    for key, value in result.items():
        shown = value if value not in (None, "") else "-"
        if key.endswith(("_at", "_upload")) and isinstance(value, int | float):
            shown = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        print(f"{key:>16}: {shown}")
    return 0


def import_command(config: GatewayConfig, folder: Path) -> int:
    from edge_gateway.importer import import_folder

    if not folder.is_dir():
        print(f"edge-gateway: {folder} is not a folder", file=sys.stderr)
        return 2
    result = import_folder(config, folder)
    print(f"stored {result.stored} instances ({result.nbytes / 1e6:.1f} MB) in {config.spool_dir}")
    if result.duplicates:
        print(f"{result.duplicates} already in an open series (kept once)")
    for reason, count in sorted(result.skipped.items()):
        print(f"skipped {count}: {reason}")
    if result.stopped:
        print(f"stopped: {result.stopped}", file=sys.stderr)
        return 3
    print("the gateway closes, zips and uploads them after the quiet period (now, or at its next start)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 2
    if args.command == "status":
        return status(config, args.json)
    if args.command == "import":
        return import_command(config, args.folder)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())

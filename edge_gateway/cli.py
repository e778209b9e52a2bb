"""``edge-gateway``: run the gateway, or show what it holds.

edge-gateway run --config /etc/edge-gateway/edge-gateway.toml
edge-gateway status --config /etc/edge-gateway/edge-gateway.toml [--json]
edge-gateway import --config /etc/edge-gateway/edge-gateway.toml DIR
edge-gateway quarantine --config /etc/edge-gateway/edge-gateway.toml list | requeue ID | remove ID [--yes]

``status``, ``import`` and ``quarantine`` only touch the spool (no bucket needed). Without ``--config``
or ``--spool-dir`` they use ``.local-run/edge-gateway.toml`` when it exists: the gateway
that ``make run`` started in this directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_gateway.config import ENV_PREFIX, ConfigError, GatewayConfig, load
from edge_gateway.logs import configure_logging
from edge_gateway.stop_signals import StopSignals

if TYPE_CHECKING:
    from edge_gateway.spool import Spool

log = logging.getLogger("edge_gateway")

# Written by `make run` (local_cloud) for the gateway it starts: spool-only commands run
# from the repository find that gateway without flags.
LOCAL_RUN_CONFIG = Path(".local-run") / "edge-gateway.toml"
# status.json is rewritten every 2 s by a running gateway; older than this, it is not running.
STALE_STATUS_SECONDS = 15.0
SPOOL_ONLY = ("status", "import", "quarantine")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-gateway", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the gateway"),
        ("status", "show spool, outbox, last upload, duplicates and quarantine"),
        ("import", "spool existing DICOM files (a folder, recursively) for upload"),
        ("quarantine", "list quarantined spool entries, re-queue one, or remove one"),
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
        if name == "quarantine":
            cmd.add_argument("action", choices=("list", "requeue", "remove"))
            cmd.add_argument("id", nargs="?", help="quarantine entry id (as `list` shows it)")
            cmd.add_argument("--json", action="store_true", help="list: print JSON")
            cmd.add_argument("--yes", action="store_true", help="remove: do not ask for confirmation")
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
    """Serve DICOM until SIGTERM or SIGINT, then stop cleanly; returns the exit status."""
    from edge_gateway.gateway import Gateway

    configure_logging(config)
    gateway = Gateway(config)
    gateway.start()
    signals = StopSignals(signal.SIGTERM, signal.SIGINT)
    log.info(
        "gateway %s ready: series close after %.0f s quiet, uploading to s3://%s",
        config.gateway_id,
        config.stable_after,
        config.bucket,
    )
    signals.wait()
    log.info("signal %d: stopping", signals.received[0])
    gateway.stop()
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def gateway_state(last: dict[str, Any], now: float) -> str:
    """Say "running (pid N)" when the pid in status.json lives and wrote recently, else "not running"."""
    pid, written = last.get("pid"), last.get("written_at")
    fresh = isinstance(written, int | float) and now - written < STALE_STATUS_SECONDS
    if isinstance(pid, int) and fresh and _pid_alive(pid):
        return f"running (pid {pid})"
    return "not running"


def status(config: GatewayConfig, as_json: bool) -> int:
    """Print the spool's state (``edge-gateway status``), as text or, with ``as_json``, as JSON.

    Returns 0, or 1 when there is no spool folder (a spool is never created to report on).
    """
    from edge_gateway.gateway import STATUS_FILE, spool_status
    from edge_gateway.spool import Spool, read_counters

    if not config.spool_dir.is_dir():  # report only: never create a spool to say it is empty
        message = f"no spool at {config.spool_dir}: no gateway ran with this configuration"
        if as_json:
            print(json.dumps({"state": "no spool", "spool_dir": str(config.spool_dir)}, indent=1))
        else:
            print(f"edge-gateway: {message} (give --config or --spool-dir)", file=sys.stderr)
        return 1
    spool = Spool(config.spool_dir, config.max_spool_bytes)
    result: dict[str, Any] = {"state": "not running", "spool_dir": str(spool.root), **spool_status(spool)}
    status_file = spool.root / STATUS_FILE
    if status_file.exists():
        last = spool.read_json(status_file)
        result["state"] = gateway_state(last, time.time())
        for key in (
            "uploaded_parts",
            "last_upload",
            "last_error",
            "last_error_at",
            "pid",
            "written_at",
        ):
            result[key] = last.get(key)
        if result["state"].startswith("running"):  # a stopped gateway's processes and counts are history
            result["receiver_pids"] = last.get("receiver_pids")
            result["associations"] = last.get("associations")
    counters = read_counters(spool.root)
    for key in ("duplicates_dropped", "versions_replaced", "versions_shipped"):
        result[key] = counters.get(key, 0)
    quarantined = spool.quarantined()
    result["quarantined"] = len(quarantined)
    if config.table_name:  # query/retrieve and storage commitment (edge_gateway.dimse_services)
        from edge_gateway.gateway import dimse_status

        result.update(dimse_status(config.spool_dir))
    if as_json:
        result["quarantine"] = quarantined
        print(json.dumps(result, indent=1))
        return 0
    for key, value in result.items():
        print(f"{key:>16}: {_shown(key, value)}")
    for entry in quarantined:  # reasons name what is wrong, never a UID or PHI
        print(f"{'':>16}  quarantine/{entry['id']} (from {entry.get('from', '?')}/): {entry.get('reason')}")
    return 0


def _shown(key: str, value: Any) -> str:
    """One value of ``edge-gateway status`` as text: times local, counts and PIDs on one line."""
    if key.endswith(("_at", "_upload")) and isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, dict) and value:
        return ", ".join(f"{name} {count}" for name, count in value.items())
    if isinstance(value, list) and value:
        return " ".join(str(item) for item in value)
    return "-" if value in (None, "", [], {}) else str(value)


def import_command(config: GatewayConfig, folder: Path) -> int:
    """Store every DICOM file under ``folder`` in the spool (``edge-gateway import``) and print a summary.

    Returns 0, 1 when files were refused (reasons printed without PHI), 2 when ``folder`` is not
    a folder, 3 when the import stopped early (for example the spool is full).
    """
    from edge_gateway.importer import import_folder

    # The files are stored byte for byte; pydicom's remarks on odd headers would bury the summary.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
    if not folder.is_dir():
        print(f"edge-gateway: {folder} is not a folder", file=sys.stderr)
        return 2
    result = import_folder(config, folder)
    print(f"stored {result.stored} instances ({result.nbytes / 1e6:.1f} MB) in {config.spool_dir}")
    if result.duplicates:
        print(f"{result.duplicates} already in an open series with the same bytes (dropped)")
    if result.already_shipped:
        print(f"{result.already_shipped} already shipped with the same bytes (dropped)")
    if result.versions:
        print(f"{result.versions} changed since spooled or shipped (stored as a new version)")
    for reason, count in sorted(result.skipped.items()):
        print(f"skipped {count}: {reason}")
    for path, reason in result.refused:
        print(f"refused {path}: {reason}")
    if result.stopped:
        print(f"stopped: {result.stopped}", file=sys.stderr)
        return 3
    print("the gateway closes, zips and uploads them after the quiet period (now, or at its next start)")
    return 1 if result.refused else 0


def quarantine_command(
    config: GatewayConfig, action: str, entry_id: str | None, as_json: bool, yes: bool
) -> int:
    """``edge-gateway quarantine list | requeue ID | remove ID``: act on quarantined spool entries.

    ``requeue`` checks the entry as the gateway would (the one UID rule, readable
    ``part.json`` / descriptor) and moves it back where it came from; ``remove`` deletes it
    after a confirmation on stdin (or ``yes``). Returns 0; 1 when the entry cannot be
    re-queued or removal was not confirmed; 2 for a missing or unknown id or no spool.
    """
    from edge_gateway.spool import Spool

    if not config.spool_dir.is_dir():
        print(f"edge-gateway: no spool at {config.spool_dir} (give --config or --spool-dir)", file=sys.stderr)
        return 2
    spool = Spool(config.spool_dir, config.max_spool_bytes)
    if action == "list":
        _quarantine_list(spool.quarantined(), as_json)
        return 0
    if not entry_id:
        print(f"edge-gateway: quarantine {action} needs an entry id (see `quarantine list`)", file=sys.stderr)
        return 2
    configure_logging(config)  # the operator's action is logged (id, folder, size: no UID, no PHI)
    return _quarantine_act(spool, action, entry_id, yes)


def _quarantine_list(entries: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(entries, indent=1))
        return
    if not entries:
        print("quarantine is empty")
    for entry in entries:  # reasons name what is wrong, never a UID or PHI
        at = entry.get("at")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if isinstance(at, int | float) else "?"
        print(f"{entry['id']}  {when}  from {entry.get('from', '?')}/: {entry.get('reason')}")


def _quarantine_act(spool: Spool, action: str, entry_id: str, yes: bool) -> int:
    from edge_gateway.spool import CannotRequeue, NotQuarantined

    try:
        if action == "requeue":
            source = spool.requeue(entry_id)
            print(f"re-queued {entry_id} to {source}/: the gateway ships it (now, or at its next start)")
            return 0
        folder = spool.quarantine_folder(entry_id)
        if not yes:
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            answer = input(f"remove quarantine/{entry_id} ({size} bytes) for good? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("not removed")
                return 1
        freed = spool.remove_quarantined(entry_id)
        print(f"removed {entry_id} ({freed} bytes)")
        return 0
    except NotQuarantined:
        print(f"edge-gateway: no quarantine entry {entry_id!r} (see `quarantine list`)", file=sys.stderr)
        return 2
    except CannotRequeue as exc:
        print(f"edge-gateway: cannot re-queue {entry_id}: {exc}", file=sys.stderr)
        return 1
    except EOFError:
        print("\nnot removed (no confirmation on stdin: use --yes)", file=sys.stderr)
        return 1


def _config_path(args: argparse.Namespace) -> Path | None:
    """``--config``; for spool-only commands without any spool setting, ``make run``'s gateway config."""
    if args.config is not None or args.command not in SPOOL_ONLY:
        return args.config  # type: ignore[no-any-return]
    if args.spool_dir is None and f"{ENV_PREFIX}SPOOL_DIR" not in os.environ and LOCAL_RUN_CONFIG.is_file():
        print(f"edge-gateway: using {LOCAL_RUN_CONFIG} (the gateway of `make run`)", file=sys.stderr)
        return LOCAL_RUN_CONFIG
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``edge-gateway``: parse ``argv`` (default ``sys.argv``), load the configuration, run.

    Returns the process exit status: 2 for a configuration error (printed on stderr).
    """
    args = _parser().parse_args(argv)
    try:
        config = load(_config_path(args), _overrides(args), spool_only=args.command in SPOOL_ONLY)
    except ConfigError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 2
    if args.command == "status":
        return status(config, args.json)
    if args.command == "import":
        return import_command(config, args.folder)
    if args.command == "quarantine":
        return quarantine_command(config, args.action, args.id, args.json, args.yes)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())

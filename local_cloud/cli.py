"""``local-cloud run``: the whole system on this machine, no AWS account needed. Ctrl-C stops it."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from edge_gateway.stop_signals import StopSignals
from local_cloud import logs
from local_cloud.dev_token import new_secret
from local_cloud.stack import LocalCloud, LocalCloudConfig, PortInUse


def _parser() -> argparse.ArgumentParser:
    defaults = LocalCloudConfig()
    parser = argparse.ArgumentParser(prog="local-cloud", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start moto server, ingest, API and edge gateway")
    run.add_argument("--host", default=defaults.host, help="address every service binds to")
    run.add_argument("--moto-port", type=int, default=defaults.moto_port)
    run.add_argument("--api-port", type=int, default=defaults.api_port)
    run.add_argument("--dicom-port", type=int, default=defaults.dicom_port)
    run.add_argument("--ae-title", default=defaults.ae_title)
    run.add_argument(
        "--stable-after",
        type=float,
        default=defaults.stable_after,
        help="quiet seconds that close a series (production default: 60)",
    )
    run.add_argument(
        "--data-dir",
        type=Path,
        default=defaults.data_dir,
        help="the gateway's spool, the saved bucket and index, and logs live here",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="start with an empty bucket and index (deletes the ones saved by earlier runs)",
    )
    run.add_argument(
        "--no-persist",
        action="store_true",
        help="neither load nor save the bucket and index (benchmarks, throw-away runs)",
    )
    run.add_argument("--no-gateway", action="store_true", help="cloud side only")
    run.add_argument(
        "--auth", action="store_true", help="require a development JWT on the API (printed at start)"
    )
    run.add_argument(
        "--viewer-url",
        default=defaults.viewer_url,
        help="base URL of the OHIF viewer the /ui page links studies to (default: the one served here)",
    )
    run.add_argument(
        "--server-timing",
        action="store_true",
        help="add a Server-Timing header to API responses: handler time vs time in AWS calls",
    )
    run.add_argument("--viewer-port", type=int, default=defaults.viewer_port, help="OHIF viewer (0: any)")
    run.add_argument("--no-viewer", action="store_true", help="do not serve the OHIF viewer")
    run.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="a browser origin allowed to call the API (repeatable; the viewer's is always allowed)",
    )
    run.add_argument(
        "--known-aet",
        action="append",
        default=[],
        type=_known_aet,
        metavar="AET=HOST:PORT",
        help="a C-MOVE destination (and storage commitment requester) of the gateway (repeatable)",
    )
    return parser


def _known_aet(value: str) -> str:
    """One ``--known-aet`` value, checked as the gateway checks its ``known_aets`` entries."""
    from edge_gateway.dimse_access import AccessConfigError, parse_known_aets

    try:
        parse_known_aets((value,))
    except AccessConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value.strip()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``local-cloud``: start the stand-in and serve until interrupted.

    Returns 0, or 2 when a port is in use.
    """
    args = _parser().parse_args(argv)
    logs.configure(log_dir=args.data_dir / "logs")
    config = LocalCloudConfig(
        host=args.host,
        moto_port=args.moto_port,
        api_port=args.api_port,
        dicom_port=args.dicom_port,
        ae_title=args.ae_title,
        stable_after=args.stable_after,
        data_dir=args.data_dir,
        fresh=args.fresh,
        persist=not args.no_persist,
        with_gateway=not args.no_gateway,
        dev_secret=new_secret() if args.auth else None,
        server_timing=args.server_timing,
        viewer_url=args.viewer_url,
        with_viewer=not args.no_viewer,
        viewer_port=args.viewer_port,
        cors_origins=tuple(args.cors_origin),
        known_aets=tuple(args.known_aet),
    )
    signals = StopSignals(signal.SIGINT, signal.SIGTERM)
    cloud = LocalCloud(config)
    try:
        try:
            cloud.start()
        except PortInUse as exc:
            print(f"local-cloud: {exc}", file=sys.stderr)
            return 2
        print(ready_banner(cloud), file=sys.stderr, flush=True)
        signals.wait()
    finally:
        if signals.received:
            saving = ": saving the bucket and index" if config.persist else ""
            print(f"\nstopping{saving} ...", file=sys.stderr, flush=True)
        cloud.stop()
    kept = "the bucket and index were not saved (--no-persist)"
    if config.persist:
        kept = f"data kept in {config.data_dir} (`make run` goes on with it, --fresh starts empty)"
    print(f"stopped; {kept}", file=sys.stderr)
    return 0


def ready_banner(cloud: LocalCloud) -> str:
    """What to do next, with this run's ports: send a folder, query, browse, look at S3."""
    c = cloud.config
    # edge-gateway status/import find .local-run/edge-gateway.toml by themselves; elsewhere, say where.
    config_file = c.data_dir / "edge-gateway.toml"
    gateway_flags = "" if c.data_dir == Path(".local-run") else f" --config {config_file}"
    send = (
        f"  dcmsend -aec {c.ae_title} {c.host} {c.dicom_port} --scan-directories --recurse -nh <folder>"
        "    # dcmtk\n"
        f"  .venv/bin/edge-gateway import{gateway_flags} <folder>    # no network: straight into the spool\n"
        f"  .venv/bin/edge-gateway status{gateway_flags}\n"
    )
    return (
        f"\nReady. Send a folder of DICOM files (compressed ones too; other files are skipped):\n{send}"
        f"Query:  curl {cloud.api_url}/dicomweb/studies\n"
        f"Browse: {cloud.api_url}/ui   (API description: {cloud.api_url}/swagger)\n"
        f"View:   {cloud.viewer_url or '(viewer off)'}   (OHIF; one study: /viewer?StudyInstanceUIDs=<uid>)\n"
        f"S3:     AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x .venv/bin/aws --region {c.region} "
        f"--endpoint-url {cloud.endpoint} s3 ls s3://{c.bucket} --recursive\n"
        f"Logs:   {c.data_dir / 'logs'} (metrics.log: EMF metrics, warnings.log: pydicom's warnings)\n"
        "Ctrl-C stops everything; the next `make run` has the same data.\n"
    )


if __name__ == "__main__":
    sys.exit(main())

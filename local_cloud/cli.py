"""``local-cloud run``: the whole system on this machine, no AWS account needed. Ctrl-C stops it."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

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
    run.add_argument("--data-dir", type=Path, default=defaults.data_dir, help="gateway spool lives here")
    run.add_argument("--no-gateway", action="store_true", help="cloud side only")
    run.add_argument(
        "--auth", action="store_true", help="require a development JWT on the API (printed at start)"
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure()
    config = LocalCloudConfig(
        host=args.host,
        moto_port=args.moto_port,
        api_port=args.api_port,
        dicom_port=args.dicom_port,
        ae_title=args.ae_title,
        stable_after=args.stable_after,
        data_dir=args.data_dir,
        with_gateway=not args.no_gateway,
        dev_secret=new_secret() if args.auth else None,
        server_timing=args.server_timing,
        with_viewer=not args.no_viewer,
        viewer_port=args.viewer_port,
        cors_origins=tuple(args.cors_origin),
    )
    stopping = threading.Event()

    def stop(_signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    cloud = LocalCloud(config)
    try:
        try:
            cloud.start()
        except PortInUse as exc:
            print(f"local-cloud: {exc}", file=sys.stderr)
            return 2
        c = cloud.config
        print(
            f"\nReady. Send DICOM:  storescu -aec {c.ae_title} {c.host} {c.dicom_port} +sd <dir>\n"
            f"Query:  curl {cloud.api_url}/dicomweb/studies\n"
            f"Browse: {cloud.api_url}/ui   (API description: {cloud.api_url}/swagger)\n"
            f"View:   {cloud.viewer_url or '(viewer off)'}   "
            "(OHIF; one study: /viewer?StudyInstanceUIDs=<uid>)\n"
            f"S3:     AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x .venv/bin/aws --region {c.region} "
            f"--endpoint-url {cloud.endpoint} "
            f"s3 ls s3://{c.bucket} --recursive\n"
            "Ctrl-C stops everything.\n",
            file=sys.stderr,
            flush=True,
        )
        stopping.wait()
    finally:
        cloud.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

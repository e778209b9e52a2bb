"""Upload the pinned OHIF viewer to the stack's viewer bucket (``make deploy-viewer``).

The SAM application hosts the viewer when deployed with ``DeployViewer=true``
(template.yaml: a private bucket read by CloudFront through Origin Access Control).
This command takes the ``@ohif/app`` dist that :mod:`local_cloud.viewer` caches,
generates ``app-config.js`` for the deployed API (DICOMweb data source, ``/thumbnail``
thumbnails, sign-in at the JWT issuer the API trusts) and uploads every file with
its Content-Type and Cache-Control:

- content-hashed bundles (``app.bundle.0f6159c501addfe9.js``, ``*.wasm`` named by hash):
  ``public, max-age=31536000, immutable``;
- everything else (``index.html``, ``app-config.js``, ``manifest.json``...): ``no-cache``
  (revalidated, so a new upload is seen at once).

Then it invalidates ``/index.html`` and ``/app-config.js`` at CloudFront (when a
distribution is known). Where the stack's outputs are missing (``DeployViewer=false``)
it stops with a message; every AWS error is reported without a stack trace.
"""

from __future__ import annotations

import argparse
import logging
import mimetypes
import re
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from local_cloud.viewer import (
    DEFAULT_CACHE,
    DEFAULT_SCOPE,
    OHIF_VERSION,
    ViewerUnavailable,
    app_config_js,
    ensure_dist,
    oidc_client,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("local_cloud.viewer_deploy")

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# webpack names chunks <name>.<16+ hex digits>.<ext>, wasm and assets <hex>.<ext>.
_HASHED = re.compile(r"(^|[.-])[0-9a-f]{16,}\.[a-z0-9]+$")
# What mimetypes may not know on a minimal system (Debian's has no /etc/mime.types by default).
_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".jsonc": "application/json",
    ".xml": "application/xml",
    ".map": "application/json",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".txt": "text/plain",
    ".webmanifest": "application/manifest+json",
}
TEXT_TYPES = ("text/", "application/javascript", "application/json", "application/xml", "image/svg+xml")
UPLOAD_WORKERS = 8


class DeployError(RuntimeError):
    """The viewer cannot be deployed (message for the operator, no stack trace)."""


@dataclass(frozen=True)
class ViewerTarget:
    """Where the viewer goes and what it talks to."""

    bucket: str
    api_url: str
    issuer: str | None = None
    client_id: str | None = None
    distribution_id: str | None = None
    viewer_url: str | None = None


def content_type(path: str) -> str:
    """Content-Type of a dist file by its extension (``; charset=utf-8`` for text)."""
    suffix = Path(path).suffix.lower()
    media_type = _TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    return f"{media_type}; charset=utf-8" if media_type.startswith(TEXT_TYPES) else media_type


def cache_control(path: str) -> str:
    """Cache-Control of a dist file: immutable when its name carries a content hash."""
    return IMMUTABLE if _HASHED.search(Path(path).name) else REVALIDATE


def stack_target(outputs: dict[str, str]) -> ViewerTarget:
    """The target named by a stack's outputs (template.yaml); DeployError when the viewer is off."""
    if "ViewerBucketName" not in outputs:
        raise DeployError("the stack has no viewer: deploy it with DeployViewer=true first")
    return ViewerTarget(
        bucket=outputs["ViewerBucketName"],
        api_url=outputs["ApiUrl"],
        issuer=outputs.get("JwtIssuerUrl") or None,
        client_id=outputs.get("JwtAudience") or None,
        distribution_id=outputs.get("ViewerDistributionId") or None,
        viewer_url=outputs.get("ViewerUrl") or None,
    )


def read_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    """``{OutputKey: OutputValue}`` of a deployed stack; DeployError when it cannot be read."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except (ClientError, BotoCoreError) as exc:
        raise DeployError(f"cannot read stack {stack_name}: {exc}") from exc
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def dist_files(dist: Path) -> Iterator[tuple[Path, str]]:
    """(file, key) of every file of the dist but its own app-config.js (replaced by the generated one)."""
    for path in sorted(dist.rglob("*")):
        key = path.relative_to(dist).as_posix()
        if path.is_file() and key != "app-config.js":
            yield path, key


def config_for(target: ViewerTarget, scope: str = DEFAULT_SCOPE) -> bytes:
    """The generated app-config.js: the API's DICOMweb, sign-in at its issuer when one is known."""
    oidc = None
    if target.issuer and target.client_id:
        oidc = oidc_client(target.issuer, target.client_id, scope)
    return app_config_js(target.api_url, oidc)


def upload(s3: S3Client, bucket: str, dist: Path, config: bytes, workers: int = UPLOAD_WORKERS) -> list[str]:
    """Upload the dist and ``config`` (as app-config.js); index.html last, so no page names missing files.

    Returns the keys written. Raises DeployError when S3 refuses a file.
    """
    files = list(dist_files(dist))
    last = [(p, k) for p, k in files if k == "index.html"]
    first = [(p, k) for p, k in files if k != "index.html"]

    def put(path: Path, key: str) -> str:
        s3.upload_file(
            str(path),
            bucket,
            key,
            ExtraArgs={"ContentType": content_type(key), "CacheControl": cache_control(key)},
        )
        return key

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            written = list(pool.map(lambda f: put(*f), first))
        s3.put_object(
            Bucket=bucket,
            Key="app-config.js",
            Body=config,
            ContentType=content_type("app-config.js"),
            CacheControl=REVALIDATE,
        )
        written.append("app-config.js")
        written.extend(put(p, k) for p, k in last)
    except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
        raise DeployError(f"upload to s3://{bucket} failed: {exc}") from exc
    return written


def invalidate(cloudfront: Any, distribution_id: str) -> str:
    """Invalidate the revalidated entry points at CloudFront; returns the invalidation id."""
    paths = ["/index.html", "/app-config.js", "/"]
    reply = cloudfront.create_invalidation(
        DistributionId=distribution_id,
        InvalidationBatch={
            "Paths": {"Quantity": len(paths), "Items": paths},
            "CallerReference": f"deploy-viewer-{time.time_ns()}",
        },
    )
    return str(reply["Invalidation"]["Id"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local_cloud.viewer_deploy",
        description=f"Upload OHIF {OHIF_VERSION} with a generated app-config.js to the viewer bucket.",
    )
    parser.add_argument("--stack-name", help="read bucket, API URL, issuer and client id from its outputs")
    parser.add_argument("--region", help="AWS region (default: the standard AWS configuration)")
    parser.add_argument("--bucket", help="viewer bucket (instead of, or overriding, the stack's)")
    parser.add_argument("--api-url", help="API base URL; DICOMweb is <api-url>/dicomweb")
    parser.add_argument("--issuer", help="OIDC issuer the API trusts (JwtIssuerUrl)")
    parser.add_argument("--client-id", help="OIDC client id of the viewer (the JWT audience)")
    parser.add_argument("--scope", default=DEFAULT_SCOPE, help=f"scopes to ask for ({DEFAULT_SCOPE!r})")
    parser.add_argument("--distribution-id", help="CloudFront distribution to invalidate")
    parser.add_argument("--dist", type=Path, help="an unpacked OHIF dist (default: the cached pinned one)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="cache of the pinned dist")
    return parser


def _target(args: argparse.Namespace, session: boto3.session.Session) -> ViewerTarget:
    base = ViewerTarget(bucket="", api_url="")
    if args.stack_name:
        base = stack_target(read_outputs(session.client("cloudformation"), args.stack_name))
    target = ViewerTarget(
        bucket=args.bucket or base.bucket,
        api_url=args.api_url or base.api_url,
        issuer=args.issuer or base.issuer,
        client_id=args.client_id or base.client_id,
        distribution_id=args.distribution_id or base.distribution_id,
        viewer_url=base.viewer_url,
    )
    if not target.bucket or not target.api_url:
        raise DeployError("give --stack-name, or --bucket and --api-url")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Deploy the viewer; 0 on success, 1 with a message otherwise."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    session = boto3.session.Session(region_name=args.region)
    try:
        target = _target(args, session)
        dist = args.dist or ensure_dist(args.cache_dir)
        if not (dist / "index.html").is_file():
            raise DeployError(f"{dist} is not an OHIF dist (no index.html)")
        if not (target.issuer and target.client_id):
            log.warning("no issuer/client id: the viewer cannot sign in (the API answers 401)")
        keys = upload(session.client("s3"), target.bucket, dist, config_for(target, args.scope))
        log.info("uploaded %d files to s3://%s", len(keys), target.bucket)
        if target.distribution_id:
            invalidation = invalidate(session.client("cloudfront"), target.distribution_id)
            log.info("invalidated index.html and app-config.js (%s)", invalidation)
    except (DeployError, ViewerUnavailable) as exc:
        print(f"deploy-viewer: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"deploy-viewer: AWS refused: {exc}", file=sys.stderr)
        return 1
    if target.viewer_url:
        log.info("viewer: %s", target.viewer_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Regenerate the events in this folder with `sam local generate-event`, then adapt them.

    SAM_CLI=.tools-sam/bin/sam .venv/bin/python tests/events/generate.py

SAM's samples carry placeholder values (cookies, client certificates, a POST body); the
adaptations make each event what API Gateway and S3 really send for these routes and keys.
The UIDs are examples: `sam local invoke` against the local bucket needs the UIDs of a part
that is really there (tests/sam rewrites them; by hand, edit the file or pipe it through jq).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
SAM = os.environ.get("SAM_CLI", "sam")
BUCKET = "dicom-local"
STUDY = "1.2.826.0.1.3680043.8.498.1001"
SERIES = "1.2.826.0.1.3680043.8.498.1002"
PART = "20261122T200245Z-3fa2c1d0"


def sam_event(*args: str) -> dict[str, Any]:
    out = subprocess.run([SAM, "local", "generate-event", *args], check=True, capture_output=True, text=True)
    event: dict[str, Any] = json.loads(out.stdout)
    return event


def s3_put() -> dict[str, Any]:
    key = f"incoming/{STUDY}/{SERIES}/{PART}.zip"
    event = sam_event("s3", "put", "--bucket", BUCKET, "--key", key)
    event["Records"][0]["s3"]["configurationId"] = "PartCreated"
    event["Records"][0]["s3"]["object"]["size"] = 4096
    return event


def http_get(route: str, path: str, params: dict[str, str], query: dict[str, str]) -> dict[str, Any]:
    # SAM's sample prefixes the path with "/" itself.
    event = sam_event("apigateway", "http-api-proxy", "--method", "GET", "--path", path.lstrip("/"))
    context = event["requestContext"]
    raw_query = urlencode(query)
    event.update(
        routeKey=f"GET {route}",
        rawQueryString=raw_query,
        headers={"accept": "application/dicom+json", "authorization": "Bearer <jwt>", "host": "localhost"},
        pathParameters=params or None,
        isBase64Encoded=False,
    )
    for unused in ("cookies", "body", "stageVariables"):
        event.pop(unused, None)
    if query:
        event["queryStringParameters"] = query
    else:
        event.pop("queryStringParameters", None)
    if not params:
        event.pop("pathParameters")
    context.pop("authentication", None)
    context["routeKey"] = event["routeKey"]
    context["authorizer"] = {
        "jwt": {"claims": {"sub": "example-user", "scope": "dicom/read"}, "scopes": ["dicom/read"]}
    }
    return event


EVENTS: dict[str, Callable[[], dict[str, Any]]] = {
    "ingest/s3_put_part.json": s3_put,
    "query/search_studies.json": lambda: http_get(
        "/dicomweb/studies", "/dicomweb/studies", {}, {"StudyDate": "20000101-", "limit": "10"}
    ),
    "query/search_studies_by_uid.json": lambda: http_get(
        "/dicomweb/studies", "/dicomweb/studies", {}, {"StudyInstanceUID": STUDY}
    ),
    "query/search_series.json": lambda: http_get(
        "/dicomweb/studies/{study}/series", f"/dicomweb/studies/{STUDY}/series", {"study": STUDY}, {}
    ),
    "query/search_instances.json": lambda: http_get(
        "/dicomweb/studies/{study}/series/{series}/instances",
        f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances",
        {"study": STUDY, "series": SERIES},
        {},
    ),
    "query/series_summary.json": lambda: http_get(
        "/api/studies/{study}/series/{series}",
        f"/api/studies/{STUDY}/series/{SERIES}",
        {"study": STUDY, "series": SERIES},
        {},
    ),
}


def main() -> None:
    for name, build in EVENTS.items():
        path = HERE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(build(), indent=2) + "\n")
        print(path.relative_to(HERE.parent.parent))


if __name__ == "__main__":
    main()

"""The OpenAPI document (``/openapi.json``) and Swagger UI (``/swagger``), built from the registered routes.

Paths and methods come from the resolver itself, so a route cannot be missing;
query parameters come from ``QUERY_PARAMETERS`` below. (Powertools' own
generator needs pydantic and typed handler signatures at import time, which
would cost the cold start of every request; this one runs only when asked.)
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import Response

from query.errors import NotFound
from query.route_table import ROUTES, DocumentedRouter
from query.search import INSTANCE_MATCHING, SERIES_MATCHING, STUDY_MATCHING

router = DocumentedRouter()

UID = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
PAGING: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
    "offset": {"type": "integer", "minimum": 0},
    "fuzzymatching": {"type": "boolean"},
    "includefield": {"type": "string", "description": "comma-separated keywords or tags, or `all`"},
}
MATCH: dict[str, Any] = {"type": "string", "description": "PS3.18 matching: wildcards, UID lists, ranges"}


def _match(names: set[str]) -> dict[str, dict[str, Any]]:
    return {name: dict(MATCH) for name in sorted(names)}


QUERY_PARAMETERS: dict[str, dict[str, dict[str, Any]]] = {
    "/dicomweb/studies": {**_match(STUDY_MATCHING), **PAGING},
    "/dicomweb/series": {**_match(STUDY_MATCHING | SERIES_MATCHING), **PAGING},
    "/dicomweb/studies/{study_uid}/series": {**_match(SERIES_MATCHING), **PAGING},
    "/dicomweb/studies/{study_uid}/instances": {**_match(SERIES_MATCHING | INSTANCE_MATCHING), **PAGING},
    "/dicomweb/studies/{study_uid}/series/{series_uid}/instances": {**_match(INSTANCE_MATCHING), **PAGING},
    "/api/patients": {
        "name": {"type": "string", "description": "prefix of any word of the patient name"},
        "id": {"type": "string", "description": "PatientID"},
    },
}
ERRORS = {
    "400": "malformed parameter (UID, date, range, tag, limit)",
    "401": "no valid bearer token",
    "403": "token lacks the scope",
    "404": "unknown study, series, instance or route",
    "405": "method not allowed",
    "413": "over a request or decode limit (common.decode_limits)",
    "503": "index temporarily unavailable",
}
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    "required": ["error", "status"],
}


def _parameter(name: str, location: str, schema: dict[str, Any]) -> dict[str, Any]:
    described = {k: v for k, v in schema.items() if k != "description"}
    result: dict[str, Any] = {
        "name": name,
        "in": location,
        "required": location == "path",
        "schema": described,
    }
    if "description" in schema:
        result["description"] = schema["description"]
    return result


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of every route in :data:`query.route_table.ROUTES`.

    Paths and methods come from the route table, summaries from each handler's
    docstring, query parameters from :data:`QUERY_PARAMETERS`.
    """
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        path = route.openapi_path
        parameters = [
            _parameter(name, "path", {"type": "string", "pattern": UID, "maxLength": 64})
            if name.endswith("_uid")
            else _parameter(name, "path", {"type": "string"})
            for name in re.findall(r"{(\w+)}", path)
        ]
        parameters += [_parameter(n, "query", s) for n, s in QUERY_PARAMETERS.get(path, {}).items()]
        responses: dict[str, Any] = {"200": {"description": "success"}}
        if path.startswith("/dicomweb/") and route.method == "GET" and "/metadata" not in path:
            responses["204"] = {"description": "no match"}
        if route.method == "POST":
            responses.update(
                {"202": {"description": "some instances stored"}, "409": {"description": "none stored"}}
            )
        for status, text in ERRORS.items():
            responses[status] = {
                "description": text,
                "content": {"application/json": {"schema": ERROR_SCHEMA}},
            }
        operation: dict[str, Any] = {
            "operationId": f"{route.method.lower()}_{route.func.__name__}",
            "summary": (route.func.__doc__ or route.func.__name__).strip().splitlines()[0],
            "parameters": parameters,
            "responses": responses,
        }
        if route.method == "POST":
            operation["requestBody"] = {
                "required": True,
                "content": {'multipart/related; type="application/dicom"': {"schema": {"type": "string"}}},
            }
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "DICOM query API (DICOMweb + JSON)", "version": "1.0.0"},
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        },
        "security": [{"bearer": []}],
    }


# Swagger UI is served from the pinned swagger-ui-bundle package (Python wheel, shipped in the
# Lambda code asset): no CDN, so it works offline and no third-party script runs on the page
# where users paste tokens. Only these files are served; the page runs no inline script.
SWAGGER_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
SWAGGER_INIT = "swagger-init.js"
SWAGGER_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DICOM query API</title>
<link rel="stylesheet" href="swagger/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="swagger/swagger-ui-bundle.js"></script>
<script src="swagger/swagger-init.js"></script>
</body></html>"""
# Relative to the page (/swagger): /openapi.json of this API.
SWAGGER_INIT_JS = 'window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"});\n'
# Scripts and styles from this API only; requests ("Try it out") only to this API. Swagger UI
# sets styles through the DOM (allowed) and draws its icons as data: images.
SWAGGER_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/openapi.json")
def openapi() -> Response[str]:
    """The OpenAPI 3 document of this API."""
    return Response(200, "application/json", json.dumps(openapi_document()))


@router.get("/swagger")
def swagger() -> Response[str]:
    """Swagger UI over /openapi.json."""
    return Response(
        200,
        "text/html; charset=utf-8",
        SWAGGER_HTML,
        headers={**SWAGGER_HEADERS, "Cache-Control": "no-cache"},
    )


@functools.cache
def _swagger_file(name: str) -> str:
    from swagger_ui_bundle import swagger_ui_path

    return (Path(str(swagger_ui_path)) / name).read_text(encoding="utf-8")


@router.get("/swagger/<asset>")
def swagger_asset(asset: str) -> Response[str]:
    """Swagger UI's script and style sheet, from the pinned swagger-ui-bundle package."""
    if asset == SWAGGER_INIT:
        body, content_type = SWAGGER_INIT_JS, "text/javascript; charset=utf-8"
    elif asset in SWAGGER_ASSETS:
        body, content_type = _swagger_file(asset), SWAGGER_ASSETS[asset]
    else:
        raise NotFound("no such Swagger UI file")
    return Response(
        200,
        content_type,
        body,
        headers={**SWAGGER_HEADERS, "Cache-Control": "public, max-age=86400"},
        compress=True,
    )

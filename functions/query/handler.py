"""Lambda entry point of the HTTP API: one resolver, routes in query.routes, errors mapped here."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from common.observability import logger, metrics, tracer

from query import access, route_table
from query.errors import (
    BadRequest,
    Forbidden,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    QueryError,
    StoreError,
    Unauthorized,
    UnsupportedMediaType,
)
from query.routes import (
    admin,
    answers,
    bulkdata,
    docs,
    frames,
    qido,
    rendered,
    stow,
    summary,
    thumbnails,
    ui,
    versions,
    wado,
)

app = APIGatewayHttpResolver()
app.include_router(qido.router)
app.include_router(wado.router)
app.include_router(frames.router)
app.include_router(bulkdata.router)
app.include_router(thumbnails.router)
app.include_router(stow.router)
app.include_router(summary.router)
app.include_router(rendered.router)
app.include_router(ui.router)
app.include_router(answers.router)
app.include_router(docs.router)
app.include_router(admin.router)
app.include_router(versions.router)


# The one place where a domain error becomes an HTTP status (PS3.18 8.6 for the DICOMweb routes).
HTTP_STATUS: dict[type[QueryError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    NotAcceptable: 406,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    StoreError: 503,
}


def _error(status: int, message: str) -> Response[dict[str, Any]]:
    return Response(status, content_types.APPLICATION_JSON, {"error": message, "status": status})


@app.exception_handler(QueryError)
def query_error(exc: QueryError) -> Response[dict[str, Any]]:
    """Any domain error as ``{"error": <message>, "status": <code>}`` with its HTTP status."""
    status = next((HTTP_STATUS[t] for t in type(exc).__mro__ if t in HTTP_STATUS), 400)
    if isinstance(exc, StoreError):
        logger.exception("index read failed")
        return _error(status, "the index is temporarily unavailable, try again")
    return _error(status, str(exc))


@app.not_found
def unknown_route(_: Exception) -> Response[dict[str, Any]]:
    """Answer an unknown path with 404, or 405 when the path exists for another method."""
    if route_table.other_methods(app.current_event.path, app.current_event.http_method):
        return _error(405, "method not allowed on this route")
    return _error(404, "no such route")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point of the query function (API Gateway HTTP API events)."""
    access.set_caller(access.caller_from_event(event))
    return app.resolve(access.enter_partition(event), context)

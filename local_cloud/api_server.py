"""A real HTTP server on loopback that turns each request into an API Gateway HTTP API (v2) event.

Like ``sam local start-api``: the query handler runs unchanged, with the event
and response shapes of the payload format version 2.0.
"""

from __future__ import annotations

import base64
import logging
import re
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local_cloud.aws_timing import AwsCallTimer
from local_cloud.cors import CorsPolicy
from local_cloud.dev_token import TokenRejected, authorizer_context, check
from local_cloud.http_service import BackgroundHttpServer
from local_cloud.lambda_context import LocalLambdaContext

log = logging.getLogger("local_cloud.api")

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
TEXT_TYPES = ("text/", "application/json", "application/dicom+json", "application/javascript")
# Query strings carry PatientID, PatientName, AccessionNumber...: never logged.
_QUERY = re.compile(r"\?[^\s'\"]*")


def without_query(text: str) -> str:
    """``text`` with every URL query string replaced by ``?…`` (for log lines)."""
    return _QUERY.sub("?\u2026", text)


def http_api_event(
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    source_ip: str,
    domain_name: str = "127.0.0.1",
) -> dict[str, Any]:
    """The payload-format-2.0 event API Gateway would send for this request.

    ``domain_name`` is the server's own (configured) name, as API Gateway puts its domain in
    ``requestContext.domainName``; the client's ``Host`` header never replaces it.
    """
    url = urlsplit(target)
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(url.query, keep_blank_values=True):
        params.setdefault(name, []).append(value)
    lower = {k.lower(): v for k, v in headers.items()}
    # API Gateway adds these; here the client spoke plain HTTP to this port.
    lower.setdefault("x-forwarded-proto", "http")
    lower.setdefault("x-forwarded-for", source_ip)
    content_type = lower.get("content-type", "")
    is_text = content_type.startswith(TEXT_TYPES)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": url.path,
        "rawQueryString": url.query,
        "headers": lower,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": domain_name,
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": url.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": lower.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": bool(body) and not is_text,
    }
    if params:
        # API Gateway joins repeated parameters with commas.
        event["queryStringParameters"] = {k: ",".join(v) for k, v in params.items()}
    if lower.get("cookie"):
        event["cookies"] = [c.strip() for c in lower["cookie"].split(";")]
    if body:
        event["body"] = base64.b64encode(body).decode() if event["isBase64Encoded"] else body.decode()
    return event


class ApiServer(BackgroundHttpServer):
    """The HTTP API of the template on loopback: requests become payload 2.0 events for ``handler``.

    With ``dev_secret``, requests need a bearer token signed with it (the JWT authorizer's part);
    ``cors`` answers preflights as the HTTP API's CORS configuration does.
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: LambdaHandler,
        dev_secret: str | None = None,
        timer: AwsCallTimer | None = None,
        cors: CorsPolicy | None = None,
    ) -> None:
        self._handler = handler
        # As the template's HTTP API: preflights answered here, CORS headers on every answer.
        self._cors = cors
        self._dev_secret = dev_secret
        # With a timer, each response says where the handler's time went (see local_cloud.aws_timing).
        self._timer = timer
        outer = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = dict(self.headers.items())
                host = headers.pop("Host", headers.pop("host", ""))
                # Some clients (dicomweb-client) send Host without the port: right for API Gateway on
                # 443, wrong here, where RetrieveURL and BulkDataURI are built from it.
                if host and ":" not in host.rsplit("]", 1)[-1]:
                    host = f"{host}:{outer.port}"
                headers["host"] = host
                event = http_api_event(
                    self.command,
                    self.path,
                    headers,
                    body,
                    self.client_address[0],
                    outer.domain_name,
                )
                outer.respond(self, event)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                # Like API Gateway's access log in template.yaml: the path, never the query string.
                path = self.path.split("?", 1)[0]
                log.info("%s %s %s %s", self.address_string(), self.command, path, code)

            def log_message(self, format: str, *args: Any) -> None:
                log.info("%s %s", self.address_string(), without_query(format % args))

        super().__init__(host, port, RequestHandler, name="api")
        # What the function sees as requestContext.domainName (links come from configuration).
        self.domain_name = f"{host}:{self.port}"

    def _authorize(self, event: dict[str, Any]) -> bool:
        """With a dev secret, act like API Gateway's JWT authorizer: no valid bearer token, no call.

        The token is checked by local_cloud.dev_token.check (iss, aud/client_id, exp, nbf, iat,
        claim types); the reason of a refusal is logged, as API Gateway's access log records
        ``$context.authorizer.error``.
        """
        if self._dev_secret is None:
            return True
        value = event["headers"].get("authorization", "").strip()
        # API Gateway takes the token alone or prefixed with Bearer.
        scheme, _, rest = value.partition(" ")
        token = rest.strip() if scheme.lower() == "bearer" else value
        try:
            claims = check(self._dev_secret, token) if token else None
        except TokenRejected as exc:
            log.info("401: %s", exc)
            return False
        if claims is None:
            log.info("401: the token is missing")
            return False
        event["requestContext"]["authorizer"] = authorizer_context(claims)
        return True

    def respond(self, request: BaseHTTPRequestHandler, event: dict[str, Any]) -> None:
        """Answer one request: CORS preflight, 401 without a valid token, or the handler's response."""
        method = event["requestContext"]["http"]["method"]
        cors: dict[str, str] = {}
        if self._cors is not None:
            if CorsPolicy.is_preflight(method, event["headers"]):
                request.send_response(204)
                for name, value in self._cors.preflight(event["headers"]).items():
                    request.send_header(name, value)
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            cors = self._cors.response_headers(event["headers"])
        if not self._authorize(event):
            body = b'{"message":"Unauthorized"}'
            request.send_response(401)
            for name, value in cors.items():
                request.send_header(name, value)
            request.send_header("content-type", "application/json")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
            return
        if self._timer is not None:
            self._timer.start()
        try:
            result = self._handler(event, LocalLambdaContext(function_name="QueryFunction"))
            status = int(result.get("statusCode", 200))
            headers = dict(result.get("headers") or {})
            raw = result.get("body") or ""
            body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
            cookies = list(result.get("cookies") or [])
        except Exception:
            # What API Gateway answers when the integration fails.
            log.exception("query handler failed")
            status, headers, cookies = 500, {"content-type": "application/json"}, []
            body = b'{"message":"Internal Server Error"}'
        if self._timer is not None:
            headers["Server-Timing"] = self._timer.stop().header()
        headers.update(cors)
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, str(value))
        for cookie in cookies:
            request.send_header("Set-Cookie", cookie)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(body)

"""A real HTTP server on loopback that turns each request into an API Gateway HTTP API (v2) event.

Like ``sam local start-api``: the query handler runs unchanged, with the event
and response shapes of the payload format version 2.0.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
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
# An HTTP API refuses a request payload over 10 MB, a quota that cannot be raised ("Payload size",
# https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html).
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# Seconds one read or write on a connection may wait (API Gateway's maximum integration timeout,
# same page): a client that stops sending its body, or never sends a request, loses the connection.
READ_TIMEOUT_SECONDS = 30.0
# A chunk-size line (RFC 9112 7.1) longer than this is not a client speaking HTTP.
_MAX_CHUNK_LINE = 1024


class BodyRefused(Exception):
    """The request body cannot be taken: ``status`` (400, 408, 411, 413) and the reason for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def declared_length(headers: dict[str, str], limit: int = MAX_PAYLOAD_BYTES) -> int | None:
    """The body size a request declares: its Content-Length, or None for ``Transfer-Encoding: chunked``.

    ``headers`` are lower-cased. Raises BodyRefused before a byte of the body is read: 413 over
    ``limit`` (bytes), 400 for a Content-Length that is not one decimal number (RFC 9110 8.6) or
    comes with a Transfer-Encoding (RFC 9112 6.3), 411 for a transfer coding other than chunked.
    """
    encoding = headers.get("transfer-encoding", "").strip().lower()
    raw = headers.get("content-length")
    if encoding:
        if raw is not None:
            raise BodyRefused(400, "a request may not carry both Content-Length and Transfer-Encoding")
        if encoding != "chunked":
            raise BodyRefused(411, f"Transfer-Encoding {encoding!r} is not supported: send Content-Length")
        return None
    if raw is None:
        return 0
    raw = raw.strip()
    if not raw.isdigit() or not raw.isascii():
        raise BodyRefused(400, "Content-Length is not a number of bytes")
    length = int(raw)
    if length > limit:
        raise BodyRefused(413, f"the request body is over the {limit}-byte payload limit of API Gateway")
    return length


def read_chunked(rfile: Any, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The body of a ``Transfer-Encoding: chunked`` request (RFC 9112 7.1), at most ``limit`` bytes.

    Holds at most ``limit`` bytes: a chunk that would pass it is refused (413) before it is read.
    Raises BodyRefused (400) for a malformed chunk line; TimeoutError and OSError from the socket.
    """
    body = bytearray()
    while True:
        line = rfile.readline(_MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\n") or len(line) > _MAX_CHUNK_LINE:
            raise BodyRefused(400, "malformed chunked body")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BodyRefused(400, "malformed chunked body") from None
        if size < 0:
            raise BodyRefused(400, "malformed chunked body")
        if size == 0:
            break
        if len(body) + size > limit:
            raise BodyRefused(413, f"the request body is over the {limit}-byte payload limit of API Gateway")
        chunk = rfile.read(size)
        if len(chunk) != size or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise BodyRefused(400, "the chunked body ended early")
        body += chunk
    # Trailer fields, then the empty line that ends the message.
    for _ in range(100):
        line = rfile.readline(_MAX_CHUNK_LINE + 1)
        if line in (b"\r\n", b"\n", b""):
            return bytes(body)
    raise BodyRefused(400, "too many trailer fields")


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
        "isBase64Encoded": False,
    }
    if params:
        # API Gateway joins repeated parameters with commas.
        event["queryStringParameters"] = {k: ",".join(v) for k, v in params.items()}
    if lower.get("cookie"):
        event["cookies"] = [c.strip() for c in lower["cookie"].split(";")]
    set_body(event, body)
    return event


def set_body(event: dict[str, Any], body: bytes) -> None:
    """Put ``body`` in a payload-2.0 ``event``: as text for text content types, else base64."""
    content_type = event["headers"].get("content-type", "")
    event["isBase64Encoded"] = bool(body) and not content_type.startswith(TEXT_TYPES)
    event.pop("body", None)
    if body:
        event["body"] = base64.b64encode(body).decode() if event["isBase64Encoded"] else body.decode()


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
        read_timeout: float = READ_TIMEOUT_SECONDS,
        max_payload: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self._handler = handler
        # One event at a time, as in one Lambda execution environment: the function keeps the
        # request in module state (Powertools' resolver.current_event, its logger and metrics),
        # so two requests at once read each other's headers and query (a frames request answered
        # with a thumbnail's Accept: 406). Requests are still read and answered concurrently.
        self._invocation = threading.Lock()
        # As the template's HTTP API: preflights answered here, CORS headers on every answer.
        self._cors = cors
        self._dev_secret = dev_secret
        # With a timer, each response says where the handler's time went (see local_cloud.aws_timing).
        self._timer = timer
        self.max_payload = max_payload
        outer = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Applied to the socket by StreamRequestHandler.setup: every read and write may wait this long.
            timeout = read_timeout

            def _serve(self) -> None:
                headers = dict(self.headers.items())
                host = headers.pop("Host", headers.pop("host", ""))
                # Some clients (dicomweb-client) send Host without the port: right for API Gateway on
                # 443, wrong here, where RetrieveURL and BulkDataURI are built from it.
                if host and ":" not in host.rsplit("]", 1)[-1]:
                    host = f"{host}:{outer.port}"
                headers["host"] = host
                # The body is read last: preflight, size and token are settled from the headers alone.
                event = http_api_event(
                    self.command,
                    self.path,
                    headers,
                    b"",
                    self.client_address[0],
                    outer.domain_name,
                )
                outer.respond(self, event)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

            def handle_expect_100(self) -> bool:
                # Not before the headers are checked: respond() says 100 Continue just before it
                # reads the body, so a client that waits for it never sends a body refused anyway.
                return True

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
        """Answer one request whose body is still unread: CORS preflight, 400/411/413 for a body that
        cannot be taken, 401 without a valid token, 408 when the body stops coming, else the handler's
        response to the event with its body.

        Every refusal is sent before a byte of the body is read; the connection is then closed, as
        the unread body cannot be told from a next request.
        """
        method = event["requestContext"]["http"]["method"]
        preflight = self._cors is not None and CorsPolicy.is_preflight(method, event["headers"])
        cors = self._cors.response_headers(event["headers"]) if self._cors and not preflight else {}
        try:
            length = declared_length(event["headers"], self.max_payload)
        except BodyRefused as exc:
            self._refuse(request, exc.status, exc.message, cors)
            return
        if preflight and self._cors is not None:
            self._preflight(request, self._cors, event, close=length != 0)
            return
        if not self._authorize(event):
            self._refuse(request, 401, "Unauthorized", cors, close=length != 0)
            return
        if length != 0 and event["headers"].get("expect", "").strip().lower() == "100-continue":
            request.send_response_only(100)
            request.end_headers()
        body = self._read_body(request, length, cors)
        if body is None:
            return
        set_body(event, body)
        self._call_handler(request, event, cors)

    @staticmethod
    def _preflight(
        request: BaseHTTPRequestHandler, policy: CorsPolicy, event: dict[str, Any], close: bool
    ) -> None:
        """Answer a CORS preflight (204) as the HTTP API's CORS configuration does."""
        request.send_response(204)
        for name, value in policy.preflight(event["headers"]).items():
            request.send_header(name, value)
        request.send_header("Content-Length", "0")
        if close:
            request.close_connection = True
            request.send_header("Connection", "close")
        request.end_headers()

    def _read_body(
        self, request: BaseHTTPRequestHandler, length: int | None, cors: dict[str, str]
    ) -> bytes | None:
        """The request body (``length`` bytes, or chunked when None), or None once it has been refused."""
        try:
            if length is None:
                return read_chunked(request.rfile, self.max_payload)
            body = request.rfile.read(length) if length else b""
            if len(body) != length:
                raise ConnectionError("the client closed the connection before the end of the body")
            return body
        except BodyRefused as exc:
            self._refuse(request, exc.status, exc.message, cors)
        except TimeoutError:
            log.info("408: the request body did not come in %s s", request.timeout)
            self._refuse(request, 408, "the request body did not come in time", cors)
        except OSError as exc:  # the client went away
            log.info("the client left before sending its body: %s", exc)
            request.close_connection = True
        return None

    def _call_handler(
        self, request: BaseHTTPRequestHandler, event: dict[str, Any], cors: dict[str, str]
    ) -> None:
        """Invoke the function with ``event`` (one invocation at a time) and send its payload-2.0 response."""
        with self._invocation:
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

    @staticmethod
    def _refuse(
        request: BaseHTTPRequestHandler,
        status: int,
        message: str,
        cors: dict[str, str],
        close: bool = True,
    ) -> None:
        """Answer ``status`` with API Gateway's ``{"message": ...}`` body; ``close`` ends the connection."""
        body = json.dumps({"message": message}).encode()
        try:
            request.send_response(status)
            for name, value in cors.items():
                request.send_header(name, value)
            request.send_header("content-type", "application/json")
            request.send_header("Content-Length", str(len(body)))
            if close:
                request.close_connection = True
                request.send_header("Connection", "close")
            request.end_headers()
            request.wfile.write(body)
        except OSError:  # the client is gone or stopped reading: the connection closes either way
            request.close_connection = True

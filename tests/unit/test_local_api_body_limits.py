"""The local API takes a request body as API Gateway does: size and token first, then the body, in time.

Raw sockets, so a test can declare a body it never sends: an answer that arrives while the body
is still unsent proves the server refused it without reading (or buffering) it.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from local_cloud.api_server import MAX_PAYLOAD_BYTES, ApiServer, BodyRefused, declared_length
from local_cloud.dev_token import issue, new_secret

SECRET = new_secret()
# Generous: a test that fails waits this long instead of hanging; nothing asserts on time.
CLIENT_TIMEOUT = 30.0


class Recorder:
    """The function behind the API: records the bodies it was given."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.bodies.append(event.get("body", ""))
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": "{}"}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def serve(recorder: Recorder, **kwargs: Any) -> Iterator[ApiServer]:
    server = ApiServer("127.0.0.1", 0, recorder, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def open_api(recorder: Recorder) -> Iterator[ApiServer]:
    yield from serve(recorder)


@pytest.fixture
def guarded_api(recorder: Recorder) -> Iterator[ApiServer]:
    yield from serve(recorder, dev_secret=SECRET, read_timeout=0.2, max_payload=1000)


def connect(server: ApiServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT)


def head(length: str, token: str | None = None, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        "POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/related; type=application/dicom; boundary=b\r\n"
        f"{auth}{length}{extra}\r\n"
    ).encode()


def answer_then_close(sock: socket.socket) -> tuple[int, dict[str, Any], bytes]:
    """Status and JSON body of the one answer, reading until the server closes the connection."""
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
    head_part, _, body = bytes(received).partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    return status, json.loads(body), head_part


def test_a_declared_body_over_the_api_gateway_limit_is_refused_unread(
    open_api: ApiServer, recorder: Recorder
) -> None:
    with connect(open_api) as sock:
        # 99,999,999,999 bytes declared, none sent: the answer cannot have waited for them.
        sock.sendall(head("Content-Length: 99999999999\r\n"))
        status, body, head_part = answer_then_close(sock)
    assert status == 413
    assert "10485760-byte payload limit" in body["message"]
    assert b"Connection: close" in head_part
    assert recorder.bodies == []


def test_one_byte_over_the_limit_is_refused_and_the_limit_itself_passes(
    open_api: ApiServer, recorder: Recorder
) -> None:
    with connect(open_api) as sock:
        sock.sendall(head(f"Content-Length: {MAX_PAYLOAD_BYTES + 1}\r\n"))
        assert answer_then_close(sock)[0] == 413
    connection = http.client.HTTPConnection("127.0.0.1", open_api.port, timeout=CLIENT_TIMEOUT)
    connection.request("POST", "/dicomweb/studies", body=b"\0" * MAX_PAYLOAD_BYTES)
    assert connection.getresponse().status == 200
    connection.close()
    assert len(recorder.bodies) == 1


def test_the_token_is_checked_before_the_body_is_read(guarded_api: ApiServer, recorder: Recorder) -> None:
    with connect(guarded_api) as sock:
        sock.sendall(head("Content-Length: 900\r\n"))  # no token; the 900 bytes never come
        status, body, _ = answer_then_close(sock)
    assert (status, body) == (401, {"message": "Unauthorized"})
    assert recorder.bodies == []


def test_a_body_that_stops_coming_ends_with_408_and_the_socket_closed(
    guarded_api: ApiServer, recorder: Recorder
) -> None:
    token = issue(SECRET)
    with connect(guarded_api) as sock:
        sock.sendall(head("Content-Length: 900\r\n", token) + b"--b\r\n")
        # The server gives up after its read timeout; recv then sees the close, not our timeout.
        status, body, _ = answer_then_close(sock)
    assert status == 408
    assert "did not come" in body["message"]
    assert recorder.bodies == []


def test_an_idle_connection_is_closed_by_the_server(guarded_api: ApiServer) -> None:
    with connect(guarded_api) as sock:
        assert sock.recv(1) == b""  # no request at all: closed after the read timeout


@pytest.mark.parametrize(
    ("framing", "status"),
    [
        ("Content-Length: -1\r\n", 400),
        ("Content-Length: 1e3\r\n", 400),
        ("Transfer-Encoding: gzip\r\n", 411),
        ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400),
    ],
)
def test_framing_that_cannot_be_trusted_is_refused(
    guarded_api: ApiServer, recorder: Recorder, framing: str, status: int
) -> None:
    with connect(guarded_api) as sock:
        sock.sendall(head(framing, issue(SECRET)))
        answer = answer_then_close(sock)
    assert answer[0] == status
    assert answer[1]["message"]
    assert recorder.bodies == []


def test_a_chunked_body_is_taken_up_to_the_limit(guarded_api: ApiServer, recorder: Recorder) -> None:
    # dicomweb-client sends a STOW body over 1 MB with Transfer-Encoding: chunked.
    connection = http.client.HTTPConnection("127.0.0.1", guarded_api.port, timeout=CLIENT_TIMEOUT)
    pieces = [b"a" * 300, b"b" * 300, b"c" * 400]
    connection.request(
        "POST",
        "/dicomweb/studies",
        body=iter(pieces),
        headers={"Authorization": f"Bearer {issue(SECRET)}", "Content-Type": "application/json"},
        encode_chunked=True,
    )
    assert connection.getresponse().status == 200
    connection.close()
    assert recorder.bodies == [(b"".join(pieces)).decode()]


def test_a_chunk_that_would_pass_the_limit_is_refused_unread(
    guarded_api: ApiServer, recorder: Recorder
) -> None:
    with connect(guarded_api) as sock:
        # 600 bytes sent, then a 0x200 (512) byte chunk announced and never sent: 1,112 > 1,000.
        sock.sendall(head("Transfer-Encoding: chunked\r\n", issue(SECRET)))
        sock.sendall(b"258\r\n" + b"x" * 600 + b"\r\n200\r\n")
        status, body, _ = answer_then_close(sock)
    assert status == 413
    assert "1000-byte payload limit" in body["message"]
    assert recorder.bodies == []


def test_declared_length_reads_only_headers() -> None:
    assert declared_length({}) == 0
    assert declared_length({"content-length": "12"}) == 12
    assert declared_length({"transfer-encoding": "chunked"}) is None
    with pytest.raises(BodyRefused) as refused:
        declared_length({"content-length": "\u0661\u0662"})  # Arabic-Indic digits: not a Content-Length
    assert refused.value.status == 400


def test_100_continue_comes_only_once_the_headers_are_accepted(
    open_api: ApiServer, recorder: Recorder
) -> None:
    # curl waits for 100 Continue before a large body: a refused one is never uploaded.
    with connect(open_api) as sock:
        sock.sendall(head(f"Content-Length: {MAX_PAYLOAD_BYTES + 1}\r\n", extra="Expect: 100-continue\r\n"))
        status, _, head_part = answer_then_close(sock)
    assert status == 413
    assert b"100 Continue" not in head_part
    with connect(open_api) as sock:
        sock.sendall(head("Content-Length: 4\r\n", extra="Expect: 100-continue\r\n"))
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 100")
        assert reader.readline() == b"\r\n"
        sock.sendall(b"DICM")
        assert reader.readline().startswith(b"HTTP/1.1 200")
    assert recorder.bodies == [base64.b64encode(b"DICM").decode()]

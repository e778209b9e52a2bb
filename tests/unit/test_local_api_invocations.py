"""The local API runs the function one event at a time, as one Lambda execution environment does.

The query function keeps the request in module state (Powertools' ``resolver.current_event``):
two events inside it at once read each other's headers. Seen in the e2e tier under load: OHIF's
frames request got a thumbnail's Accept header and a 406.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from local_cloud.api_server import ApiServer

# Bounded waits: a test that fails waits this long instead of hanging; nothing asserts on time.
SECOND_EVENT_WAIT = 2.0
CLIENT_TIMEOUT = 30.0


class EchoFunction:
    """A Powertools HTTP API function answering its own request's Accept header.

    The first event waits inside the route for a second one to enter the function: with two
    events at once the resolver's ``current_event`` is the second one's when the first reads it.
    """

    def __init__(self) -> None:
        self.app = APIGatewayHttpResolver()
        self.inside = 0
        self.most_inside = 0
        self._count = threading.Lock()
        self._second_entered = threading.Event()
        self._first_seen = False
        self.app.get("/echo")(self._echo)

    def _echo(self) -> Response[str]:
        with self._count:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            first, self._first_seen = not self._first_seen, True
            if self.inside > 1:
                self._second_entered.set()
        if first:
            self._second_entered.wait(SECOND_EVENT_WAIT)
        accept = self.app.current_event.headers.get("accept", "")
        with self._count:
            self.inside -= 1
        return Response(200, "text/plain", accept)

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return self.app.resolve(event, context)


@pytest.fixture
def function() -> EchoFunction:
    return EchoFunction()


@pytest.fixture
def api(function: EchoFunction) -> Iterator[ApiServer]:
    server = ApiServer("127.0.0.1", 0, function)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(server: ApiServer, accept: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
    try:
        connection.request("GET", "/echo", headers={"Accept": accept})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_concurrent_requests_each_get_the_answer_to_their_own_headers(
    api: ApiServer, function: EchoFunction
) -> None:
    # GIVEN requests arriving at once with different Accept headers (a viewer loads frames and
    # thumbnails in parallel)
    accepts = [f"multipart/related; type=application/octet-stream; n={n}" for n in range(4)]
    accepts += [f"image/jpeg; n={n}" for n in range(4)]
    with ThreadPoolExecutor(len(accepts)) as pool:
        answers = list(pool.map(lambda accept: get(api, accept), accepts))
    # THEN each answer is about its own request, and the function never held two events at once
    assert answers == [(200, accept) for accept in accepts]
    assert function.most_inside == 1

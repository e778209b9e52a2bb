"""Every domain error of the query function has its HTTP status in the one table (query.handler)."""

from __future__ import annotations

import inspect

import pytest
from query import errors


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABLE_NAME", "t")
    monkeypatch.setenv("BUCKET_NAME", "b")


def test_every_query_error_has_a_status() -> None:
    from query.handler import HTTP_STATUS

    declared = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.QueryError) and cls is not errors.QueryError
    }
    assert declared, "errors.py declares domain errors"
    assert declared == set(HTTP_STATUS)
    assert all(400 <= status < 600 for status in HTTP_STATUS.values())

"""local_cloud.moto_patches: the guard, and the same observable behaviour as stock moto.

The behaviour against the stand-in's moto server process is in
tests/e2e/test_moto_transactions.py; here each scenario runs in-process twice (stock
moto, patched moto) and the outcomes must be identical.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Iterator
from typing import Any

import boto3
import moto
import pytest
from moto import mock_aws

from local_cloud import moto_patches
from local_cloud.moto_server import MotoServer
from local_cloud.template import load_template, table_definition
from tests.helpers.transaction_scenarios import SCENARIOS, Outcome, create_table, index_keys, run, seed

EXPECTED_CODES = {
    "succeeding": "",
    "failing_condition": "TransactionCanceledException",
    "failing_update_creates": "TransactionCanceledException",
    "failing_validation": "ValidationException",
}


@pytest.fixture
def stock() -> Iterator[None]:
    moto_patches.remove()
    yield
    moto_patches.remove()


def _outcome(scenario: str) -> tuple[Outcome, list[str]]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "t")
        seed(client, "t")
        outcome = run(client, "t", SCENARIOS[scenario]("t"))
        return outcome, index_keys(client, "t")


def test_the_guard_accepts_the_pinned_moto() -> None:
    # GIVEN the moto pinned in constraints.txt
    # WHEN the guard compares it with what the patch was written for
    # THEN it matches: a moto upgrade fails here until local_cloud/moto_patches.py is reviewed
    assert moto.__version__ == moto_patches.MOTO_VERSION
    assert moto_patches.check() == ""


def test_the_patch_is_not_applied_to_another_moto_version(
    stock: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from moto.dynamodb.models import DynamoDBBackend

    original = DynamoDBBackend.transact_write_items
    # GIVEN a moto version the patch was not written for
    monkeypatch.setattr(moto, "__version__", "5.9.0")
    # WHEN the launcher applies the patch
    status = moto_patches.apply(environ={})
    # THEN moto keeps its own function, with a warning saying why
    assert status == moto_patches.MISMATCH
    assert DynamoDBBackend.transact_write_items is original
    assert "5.9.0" in caplog.text


def test_the_patch_is_not_applied_when_the_stock_function_changed(
    stock: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.dynamodb.models import DynamoDBBackend

    original = DynamoDBBackend.transact_write_items
    # GIVEN a stock function whose source is not the one the patch copied
    changed = {**moto_patches.STOCK_SOURCE_SHA256, "Table.query": "0" * 64}
    monkeypatch.setattr(moto_patches, "STOCK_SOURCE_SHA256", changed)
    # WHEN the patch is applied
    # THEN it is not
    assert moto_patches.apply(environ={}) == moto_patches.MISMATCH
    assert DynamoDBBackend.transact_write_items is original


def test_the_patch_can_be_switched_off(stock: None) -> None:
    from moto.dynamodb.models import DynamoDBBackend

    original = DynamoDBBackend.transact_write_items
    assert moto_patches.apply(environ={moto_patches.DISABLE_ENV: "0"}) == moto_patches.DISABLED
    assert DynamoDBBackend.transact_write_items is original


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_patched_moto_answers_and_leaves_the_table_as_stock_moto_does(stock: None, scenario: str) -> None:
    # GIVEN the outcome of a transaction on stock moto
    expected = _outcome(scenario)
    # WHEN the same transaction runs on patched moto
    assert moto_patches.apply(environ={}) == moto_patches.APPLIED
    actual = _outcome(scenario)
    # THEN the error, the cancellation reasons, the items and the index are the same
    assert actual == expected
    assert expected[0].code == EXPECTED_CODES[scenario]


def test_the_patched_rollback_copies_items_not_tables(stock: None, monkeypatch: pytest.MonkeyPatch) -> None:
    copied: list[str] = []
    real_deepcopy = copy.deepcopy

    def counting(value: Any, memo: Any = None) -> Any:
        if memo is None:  # top-level calls only
            copied.append(type(value).__name__)
        return real_deepcopy(value, memo)

    # GIVEN patched moto and a deepcopy that records what it is asked to copy
    assert moto_patches.apply(environ={}) == moto_patches.APPLIED
    monkeypatch.setattr(copy, "deepcopy", counting)
    # WHEN a transaction fails its condition
    outcome, _ = _outcome("failing_condition")
    # THEN it was rolled back from copies of its own items: no Table was copied
    assert outcome.code == "TransactionCanceledException"
    assert outcome.item("new") is None
    assert "Table" not in copied
    assert copied.count("Item") >= 3  # counted, doomed, taken (existing items it addressed)


def _query_table(client: Any) -> None:
    """Items shaped like the index table's: partitions with sort keys, two GSIs, gaps."""
    client.create_table(**table_definition(load_template(), "q"))
    rng = random.Random(5)  # noqa: S311 - reproducible test data
    for n in range(300):
        item: dict[str, Any] = {
            "pk": {"S": f"STUDY#{n % 23:02d}"},
            "sk": {"S": rng.choice(["SERIES#", "INSTANCE#", "PART#", "#STUDY"]) + f"{n:04d}"},
            "n": {"N": str(rng.randint(0, 20))},
        }
        if n % 3:
            item["gsi1pk"] = {"S": f"site#NAME#{rng.choice('abc')}"}
            item["gsi1sk"] = {"S": f"{rng.randint(1990, 2024)}#{n:04d}"}
        if n % 4 == 0:
            item["gsi2pk"] = {"S": "site"}
            item["gsi2sk"] = {"S": f"{rng.randint(19900101, 20241231)}#{n:04d}"}
        client.put_item(TableName="q", Item=item)


QUERIES: list[dict[str, Any]] = [
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "STUDY#07"}}},
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "STUDY#99"}}},
    {
        "KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
        "ExpressionAttributeValues": {":p": {"S": "STUDY#03"}, ":s": {"S": "INSTANCE#"}},
        "ScanIndexForward": False,
    },
    {
        "KeyConditionExpression": "pk = :p AND sk BETWEEN :a AND :b",
        "ExpressionAttributeValues": {":p": {"S": "STUDY#11"}, ":a": {"S": "P"}, ":b": {"S": "T"}},
        "FilterExpression": "n > :five",
        "ProjectionExpression": "pk, sk, n",
    },
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "STUDY#01"}}, "Limit": 4},
    {
        "IndexName": "ByLookup",
        "KeyConditionExpression": "gsi1pk = :g",
        "ExpressionAttributeValues": {":g": {"S": "site#NAME#b"}},
        "Limit": 9,
    },
    {
        "IndexName": "ByLookup",
        "KeyConditionExpression": "gsi1pk = :g AND begins_with(gsi1sk, :y)",
        "ExpressionAttributeValues": {":g": {"S": "site#NAME#a"}, ":y": {"S": "20"}},
        "ScanIndexForward": False,
    },
    {
        "IndexName": "BySiteDate",
        "KeyConditionExpression": "gsi2pk = :s AND gsi2sk BETWEEN :a AND :b",
        "ExpressionAttributeValues": {":s": {"S": "site"}, ":a": {"S": "2000"}, ":b": {"S": "2015~"}},
        "Limit": 5,
    },
    {
        "IndexName": "BySiteDate",
        "KeyConditionExpression": "gsi2pk = :s",
        "ExpressionAttributeValues": {":s": {"S": "nowhere"}},
    },
]


def _pages(client: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of a Query (or a Scan when no key condition), following LastEvaluatedKey."""
    pages, start = [], None
    values = dict(request.get("ExpressionAttributeValues", {}))
    if "FilterExpression" in request:
        values[":five"] = {"N": "5"}
    while True:
        kwargs = {**request, "TableName": "q"}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        if start:
            kwargs["ExclusiveStartKey"] = start
        page = client.query(**kwargs) if "KeyConditionExpression" in kwargs else client.scan(**kwargs)
        page.pop("ResponseMetadata", None)
        pages.append(page)
        start = page.get("LastEvaluatedKey")
        if not start:
            return pages


def _all_answers() -> list[list[dict[str, Any]]]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _query_table(client)
        return [_pages(client, q) for q in [*QUERIES, {"Limit": 50}]]


def test_patched_query_answers_page_by_page_as_stock_moto_does(stock: None) -> None:
    # GIVEN every page of base-table and index Queries (ranges, filters, limits, reverse order) on stock moto
    expected = _all_answers()
    assert sum(len(p["Items"]) for p in expected[0]) > 5  # the queries do find items
    assert len(expected[5]) > 1  # and some answers come in several pages
    # WHEN the same requests run on patched moto
    assert moto_patches.apply(environ={}) == moto_patches.APPLIED
    actual = _all_answers()
    # THEN items, order, counts and LastEvaluatedKey are identical (and Scan, which is not patched, too)
    assert actual == expected


def test_the_launchers_lines_reach_the_stand_ins_log_at_their_level(caplog: pytest.LogCaptureFixture) -> None:
    server = MotoServer("127.0.0.1", 1)
    caplog.set_level(logging.INFO, logger="local_cloud.moto")
    # GIVEN the lines the moto launcher prints, among moto's request log
    lines = [
        "local_cloud.moto_patches WARNING not patching moto (moto 5.9.0 is installed)",
        "local_cloud.moto_patches STATUS mismatch",
        '127.0.0.1 - - [22/Nov/2026 23:00:00] "POST / HTTP/1.1" 200 -',
    ]
    # WHEN MotoServer reads them
    handled = [server._launcher_line(line) for line in lines]
    # THEN its own lines are taken (the warning at WARNING level, the status remembered), moto's are not
    assert handled == [True, True, False]
    assert server.patch_status == moto_patches.MISMATCH
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["not patching moto (moto 5.9.0 is installed)"]

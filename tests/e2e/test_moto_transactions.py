"""TransactWriteItems on the stand-in's own moto server (patched by local_cloud.moto_patches).

The patch replaces moto's whole-table backup with a per-item one; these tests run
against the moto server process exactly as ``local-cloud run`` starts it, each on a
fresh table of its own next to the index table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import pytest

from tests.e2e.conftest import Stack, wait_for
from tests.helpers.transaction_scenarios import (
    create_table,
    failing_condition,
    failing_update_creates,
    failing_validation,
    index_keys,
    run,
    seed,
    succeeding,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.e2e


@pytest.fixture
def table(stack: Stack) -> Iterator[tuple[DynamoDBClient, str]]:
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=stack.moto)
    name = f"txn-{uuid.uuid4().hex[:8]}"
    create_table(client, name)
    seed(client, name)
    yield client, name
    client.delete_table(TableName=name)


def test_the_stand_in_runs_moto_with_the_patch(stack: Stack) -> None:
    # GIVEN the stand-in as `make run` starts it
    # WHEN its log is read
    line = wait_for(
        lambda: next((ln for ln in stack.log.read_text().splitlines() if "TransactWriteItems" in ln), None),
        30,
        "the moto launcher's patch line in the stack log",
    )
    # THEN the moto server it started applied the per-item rollback (not the stock whole-table copy)
    assert "rolls back per item" in line, line


def test_a_successful_transaction_writes_everything(table: tuple[DynamoDBClient, str]) -> None:
    client, name = table
    # GIVEN a counter, an item to delete and a free key
    # WHEN a transaction puts, updates, deletes and puts-if-absent
    outcome = run(client, name, succeeding(name))
    # THEN every write is there
    assert outcome.code == ""
    assert outcome.item("new") is not None
    assert outcome.item("free") is not None
    counted = outcome.item("counted")
    assert counted is not None
    assert (counted["n"], counted["s"]) == ({"N": "6"}, {"S": "after"})
    assert outcome.item("doomed") is None
    assert index_keys(client, name) == ["free", "new"]


def test_one_failed_condition_leaves_none_of_the_writes(table: tuple[DynamoDBClient, str]) -> None:
    client, name = table
    before = sorted(client.scan(TableName=name)["Items"], key=lambda i: (i["pk"]["S"], i["sk"]["S"]))
    # GIVEN the same transaction, but its last Put finds its key taken
    # WHEN it runs
    outcome = run(client, name, failing_condition(name))
    # THEN it is cancelled with one reason per item, the failed one with the item it found (ALL_OLD)
    assert outcome.code == "TransactionCanceledException"
    assert [r["Code"] for r in outcome.reasons] == ["None", "None", "None", "ConditionalCheckFailed"]
    assert outcome.reasons[3]["Item"]["v"] == {"S": "first"}
    # AND the put of a new item is gone again
    assert outcome.item("new") is None
    # AND the updated item has its previous value back
    counted = outcome.item("counted")
    assert counted is not None
    assert (counted["n"], counted["s"]) == ({"N": "1"}, {"S": "before"})
    # AND the deleted item is back, in the index too
    assert outcome.item("doomed") is not None
    assert index_keys(client, name) == ["doomed"]
    # AND the table is exactly as before
    assert outcome.items == before


def test_an_item_created_by_an_update_is_removed_when_the_transaction_fails(
    table: tuple[DynamoDBClient, str],
) -> None:
    client, name = table
    # GIVEN a transaction whose Update creates an item and whose last Put fails its condition
    # WHEN it runs
    outcome = run(client, name, failing_update_creates(name))
    # THEN the created item does not survive
    assert outcome.code == "TransactionCanceledException"
    assert outcome.item("created-by-update") is None
    assert [i["pk"]["S"] for i in outcome.items] == ["counted", "doomed", "taken"]


def test_a_validation_error_rolls_back_the_writes_before_it(table: tuple[DynamoDBClient, str]) -> None:
    client, name = table
    # GIVEN a Put followed by an Update with an undefined expression value
    # WHEN the transaction runs
    outcome = run(client, name, failing_validation(name))
    # THEN moto answers ValidationException, as stock moto does, and the Put is undone
    assert outcome.code == "ValidationException"
    assert outcome.item("new") is None
    assert [i["pk"]["S"] for i in outcome.items] == ["counted", "doomed", "taken"]

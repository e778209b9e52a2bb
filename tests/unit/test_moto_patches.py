"""local_cloud.moto_patches: the guard, and the same observable behaviour as stock moto.

The behaviour against the stand-in's moto server process is in
tests/e2e/test_moto_transactions.py; here each scenario runs in-process twice (stock
moto, patched moto) and the outcomes must be identical.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import boto3
import moto
import pytest
from moto import mock_aws

from local_cloud import moto_patches
from tests.transaction_scenarios import SCENARIOS, Outcome, create_table, index_keys, run, seed

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
    monkeypatch.setattr(moto_patches, "STOCK_SOURCE_SHA256", "0" * 64)
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

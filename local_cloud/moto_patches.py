"""One narrow patch to the moto server the stand-in runs: TransactWriteItems rolls back per item.

Why: moto 5.2.5 ``DynamoDBBackend.transact_write_items`` backs up its tables
with ``copy.deepcopy(self.tables[name])`` once per transaction item, before
it writes anything. Ingest writes every part with TransactWriteItems (25
instance Puts plus two counter Updates), so each part cost O(items in the
table x items in the transaction): 0.5 s per 25-instance part on an empty
table, about 7.5 s at 4,000 instances (see README, "Latency"). DynamoDB
itself has no such cost.

What changes: before the transaction runs, this version deep-copies only the
items it addresses (table + primary key; ``None`` when absent) and, when the
transaction is cancelled, puts exactly those back (removing items that did
not exist) and drops the stream records the transaction added. Everything
else is moto's own code, unchanged: the operations run through the backend's
``put_item`` / ``update_item`` / ``delete_item``, condition failures still
end in ``TransactionCanceledException`` with one cancellation reason per item
(``ConditionalCheckFailed`` with ``Item`` for ``ALL_OLD``), a validation error
or two operations on one item still roll back and re-raise. Secondary indexes
need no restoring: moto derives them from the base items on every Query.

A side effect that is a fix: the stock rollback puts back whole-table copies
taken when the transaction started, so it would also undo writes that another
thread of the (threaded) server made meanwhile; this one touches only its own
items.

Guard: the patch replaces a function it has read. ``apply()`` checks the moto
version (pinned in constraints.txt) and the SHA-256 of the stock function's
source; on any mismatch it leaves moto alone and says so (stock behaviour:
correct, just slow with large tables). ``tests/unit/test_moto_patches.py``
fails when the pinned moto no longer matches, so a moto upgrade has to come
with a review of this file. ``LOCAL_CLOUD_MOTO_PATCH=0`` turns the patch off
(to measure the difference).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MOTO_VERSION = "5.2.5"
# sha256 of inspect.getsource(moto.dynamodb.models.DynamoDBBackend.transact_write_items) in moto 5.2.5.
STOCK_SOURCE_SHA256 = "81db2cb7d94e39c90b3a2077e1f4bb41a449c558ef9b1b1e2910fdaa39978ad4"
DISABLE_ENV = "LOCAL_CLOUD_MOTO_PATCH"

APPLIED = "applied"
DISABLED = "disabled"
MISMATCH = "mismatch"


@dataclass
class _Saved:
    """One item as it was before the transaction (``item`` None: it did not exist)."""

    table: Any
    hash_value: Any
    range_value: Any
    item: Any


def stock_source_sha256() -> str:
    """SHA-256 of the installed moto's ``transact_write_items`` source ("" when unreadable)."""
    from moto.dynamodb.models import DynamoDBBackend

    function = getattr(DynamoDBBackend, "transact_write_items", None)
    original = getattr(function, "__wrapped_stock__", function)
    try:
        source = inspect.getsource(original)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(source.encode()).hexdigest()


def check() -> str:
    """Why the patch cannot be applied ("" when it can)."""
    import moto

    if moto.__version__ != MOTO_VERSION:
        return f"moto {moto.__version__} is installed, the patch was written for {MOTO_VERSION}"
    digest = stock_source_sha256()
    if digest != STOCK_SOURCE_SHA256:
        return (
            "moto's DynamoDBBackend.transact_write_items is not the function the patch was written for "
            f"(source sha256 {digest or 'unreadable'}, expected {STOCK_SOURCE_SHA256})"
        )
    return ""


def apply(environ: dict[str, str] | None = None) -> str:
    """Install the per-item rollback into moto's DynamoDB backend; APPLIED, DISABLED or MISMATCH.

    Call it in the process that serves moto, before the first request.
    """
    env = os.environ if environ is None else environ
    if env.get(DISABLE_ENV, "1") == "0":
        log.warning("%s=0: moto's stock TransactWriteItems (copies whole tables)", DISABLE_ENV)
        return DISABLED
    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend.transact_write_items, "__wrapped_stock__", None) is not None:
        return APPLIED
    problem = check()
    if problem:
        log.warning(
            "not patching moto (%s): TransactWriteItems keeps copying whole tables, "
            "ingest into a large local table will be slow; review local_cloud/moto_patches.py",
            problem,
        )
        return MISMATCH
    stock = DynamoDBBackend.transact_write_items
    transact_write_items.__wrapped_stock__ = stock  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    log.info("moto %s: TransactWriteItems rolls back per item (local_cloud.moto_patches)", MOTO_VERSION)
    return APPLIED


def remove() -> None:
    """Put the stock function back (tests)."""
    from moto.dynamodb.models import DynamoDBBackend

    stock = getattr(DynamoDBBackend.transact_write_items, "__wrapped_stock__", None)
    if stock is not None:
        DynamoDBBackend.transact_write_items = stock  # type: ignore[method-assign]


def _primary_key(table: Any, op_type: str, op: dict[str, Any]) -> tuple[Any, Any]:
    from moto.dynamodb.models.dynamo_type import DynamoType

    attrs = op["Item"] if op_type == "Put" else op["Key"]
    hash_value = DynamoType(attrs[table.hash_key_attr])
    range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr is not None else None
    return hash_value, range_value


def _snapshot(
    backend: Any, transact_items: list[dict[str, Any]]
) -> tuple[list[_Saved], list[tuple[Any, int]]]:
    """A deep copy of every item the transaction addresses, and each touched table's stream length."""
    saved: dict[tuple[int, Any, Any], _Saved] = {}
    streams: dict[int, tuple[Any, int]] = {}
    for entry in transact_items:
        try:
            op_type, op = next(iter(entry.items()))
            table = backend.get_table(op["TableName"])
            hash_value, range_value = _primary_key(table, op_type, op)
        except Exception:  # noqa: S112 - a malformed operation fails in moto's own code below
            continue
        ident = (id(table), hash_value, range_value)
        if ident not in saved:
            bucket = table.items.get(hash_value)
            current = bucket if range_value is None else (bucket or {}).get(range_value)
            saved[ident] = _Saved(table, hash_value, range_value, copy.deepcopy(current))
        if table.stream_shard is not None and id(table) not in streams:
            streams[id(table)] = (table.stream_shard, len(table.stream_shard.items))
    return list(saved.values()), list(streams.values())


def _rollback(saved: list[_Saved], streams: list[tuple[Any, int]]) -> None:
    for entry in reversed(saved):
        items = entry.table.items
        if entry.range_value is None:
            if entry.item is None:
                items.pop(entry.hash_value, None)
            else:
                items[entry.hash_value] = entry.item
        elif entry.item is None:
            bucket = items.get(entry.hash_value)
            if bucket is not None:
                bucket.pop(entry.range_value, None)
                if not bucket:
                    del items[entry.hash_value]
        else:
            items[entry.hash_value][entry.range_value] = entry.item
    for shard, length in streams:
        del shard.items[length:]


def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:  # noqa: PLR0912, PLR0915
    """moto 5.2.5's ``DynamoDBBackend.transact_write_items`` with a per-item backup and rollback.

    The body below is moto's, line for line, except where marked "per-item".
    """
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    # per-item: back up the addressed items, not whole tables.
    saved, streams = _snapshot(self, transact_items)

    target_items: set[tuple[str, str]] = set()

    def check_unicity(table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise MultipleTransactionsException()
        target_items.add(item)

    # [(Code, Message, Item), ..]
    errors: list[tuple[str, str, dict[str, Any]] | tuple[None, None, None]] = []
    for item in transact_items:
        original_item: dict[str, Any] | None = None
        # Check transact writes are not performing multiple operations on the same item
        if len(list(item.keys())) > 1:
            raise TransactWriteSingleOpException

        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")

            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            expression_attribute_names = op.get("ExpressionAttributeNames")
            expression_attribute_values = op.get("ExpressionAttributeValues")
            return_values_on_condition_check_failure = op.get("ReturnValuesOnConditionCheckFailure")

            if op_type == "Put":
                attrs = op["Item"]
                table = self.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]

            check_unicity(table_name, key)

            current = self.get_item(table_name, key)
            if condition_expression is not None:
                condition_op = get_filter_expression(
                    condition_expression,
                    expression_attribute_names,
                    expression_attribute_values,
                )
                if not condition_op.expr(current):
                    if return_values_on_condition_check_failure == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)

            if op_type == "Put":
                attrs = op["Item"]
                self.put_item(
                    table_name,
                    attrs,
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            elif op_type == "Delete":
                self.delete_item(
                    table_name,
                    key,
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            elif op_type == "Update":
                update_expression = op["UpdateExpression"]
                self.update_item(
                    table_name,
                    key,
                    update_expression=update_expression,
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            # Rollback to the original state, and reraise the error
            _rollback(saved, streams)  # per-item
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))  # type: ignore[arg-type]
        except Exception as e:
            # For other exceptions, capture their details
            errors.append((type(e).__name__, str(e), original_item))  # type: ignore[arg-type]

    if any(code is not None for code, _, _ in errors):
        # Rollback to the original state, and reraise the errors
        _rollback(saved, streams)  # per-item
        raise TransactionCanceledException(errors)

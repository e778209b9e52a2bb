"""Two narrow patches to the moto server the stand-in runs, so that a large local archive stays usable.

Both keep moto's answers exactly as they are and change only how much work moto does
to find them. They are installed by ``local_cloud.moto_launcher`` (how ``MotoServer``
starts moto) and measured with ``bench/moto_cost.py`` and ``bench/query_latency.py``.

1. TransactWriteItems rolls back per item. moto 5.2.5
   ``DynamoDBBackend.transact_write_items`` backs up its tables with
   ``copy.deepcopy(self.tables[name])`` once per transaction item, before it writes
   anything. Ingest writes every part with TransactWriteItems (25 instance Puts plus two
   counter Updates), so a 25-instance part took 17.7 s with 10,000 instances in the table
   (0.1 s with an empty one). Here, before the transaction runs, only the items it
   addresses are deep-copied (table + primary key; ``None`` when absent); when it is
   cancelled exactly those are put back (items that did not exist are removed) and the
   stream records it added are dropped. The rest is moto's own code, line for line: the
   operations run through the backend's ``put_item`` / ``update_item`` / ``delete_item``,
   condition failures still end in ``TransactionCanceledException`` with one cancellation
   reason per item (``ConditionalCheckFailed`` with ``Item`` for ``ALL_OLD``), a validation
   error or two operations on one item still roll back and re-raise. Secondary indexes need
   no restoring: moto derives them from the base items on every Query. A side effect that
   is a fix: the stock rollback puts back whole-table copies taken when the transaction
   started, so it would also undo writes another thread of the (threaded) server made
   meanwhile; this one touches only its own items.

2. Query does not sort the whole table first. moto 5.2.5 ``Table.query`` starts from
   ``Table.all_items()``, which sorts every item of the table by primary key (DynamoType
   comparisons in Python), then keeps the matching ones and sorts those again: about
   180 ms per Query with 12,000 items, O(table) where DynamoDB is O(result). While
   ``Table.query`` runs, ``all_items`` here answers (a) for a base-table Query, only the
   items of the asked partition, (b) for an index Query, every item unsorted, minus the
   items whose string or binary index hash key certainly differs from the asked one.
   ``Table.query`` itself is unchanged and still applies every condition, then sorts the
   candidates by a total order (index keys, then the table's unique primary key), so the
   results, their order, ``Count``/``ScannedCount`` and ``LastEvaluatedKey`` are the same.
   Everything else that calls ``all_items`` (Scan, exports) gets the stock, sorted list.

Guard: each patch replaces functions it has read. ``apply()`` checks the moto version
(pinned in constraints.txt) and the SHA-256 of each replaced function's source; on any
mismatch it patches nothing and says so (stock behaviour: correct, just slow with large
tables). ``tests/unit/test_moto_patches.py`` fails when the pinned moto no longer
matches, so a moto upgrade has to come with a review of this file.
``LOCAL_CLOUD_MOTO_PATCH=0`` turns the patches off (to measure the difference).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MOTO_VERSION = "5.2.5"
# sha256 of inspect.getsource(...) of every function replaced or wrapped, in moto 5.2.5.
STOCK_SOURCE_SHA256 = {
    "DynamoDBBackend.transact_write_items": (
        "81db2cb7d94e39c90b3a2077e1f4bb41a449c558ef9b1b1e2910fdaa39978ad4"
    ),
    "Table.query": "002b4d00be6df07cf37f6cbe0132e5eb89455ae12a8e79b23db3fb492450f21e",
    "Table.all_items": "c80d2ee3c896acd0cab6ca35aaeae3ab3fb65858933f8a3403d4e027c240f31d",
}
DISABLE_ENV = "LOCAL_CLOUD_MOTO_PATCH"

APPLIED = "applied"
DISABLED = "disabled"
MISMATCH = "mismatch"

_STOCK_ATTRIBUTE = "__wrapped_stock__"


@dataclass
class _Saved:
    """One item as it was before the transaction (``item`` None: it did not exist)."""

    table: Any
    hash_value: Any
    range_value: Any
    item: Any


def _owners() -> dict[str, Any]:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    return {"DynamoDBBackend": DynamoDBBackend, "Table": Table}


def _replacements() -> dict[str, Callable[..., Any]]:
    return {
        "DynamoDBBackend.transact_write_items": transact_write_items,
        "Table.query": _query,
        "Table.all_items": _all_items,
    }


def _installed(qualified: str) -> Any:
    owner_name, _, name = qualified.partition(".")
    return getattr(_owners()[owner_name], name, None)


def _stock(qualified: str) -> Any:
    function = _installed(qualified)
    return getattr(function, _STOCK_ATTRIBUTE, function)


def source_sha256(qualified: str) -> str:
    """SHA-256 of the installed moto's source of ``Owner.function`` ("" when unreadable)."""
    try:
        source = inspect.getsource(_stock(qualified))
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(source.encode()).hexdigest()


def check() -> str:
    """Why the patches cannot be applied ("" when they can)."""
    import moto

    if moto.__version__ != MOTO_VERSION:
        return f"moto {moto.__version__} is installed, the patches were written for {MOTO_VERSION}"
    for qualified, expected in STOCK_SOURCE_SHA256.items():
        digest = source_sha256(qualified)
        if digest != expected:
            return (
                f"moto's {qualified} is not the function the patch was written for "
                f"(source sha256 {digest or 'unreadable'}, expected {expected})"
            )
    return ""


def apply(environ: dict[str, str] | None = None) -> str:
    """Install both patches into moto's DynamoDB models; APPLIED, DISABLED or MISMATCH.

    Call it in the process that serves moto, before the first request.
    """
    env = os.environ if environ is None else environ
    if env.get(DISABLE_ENV, "1") == "0":
        log.warning("%s=0: moto's stock TransactWriteItems and Query (slow with large tables)", DISABLE_ENV)
        return DISABLED
    if all(hasattr(_installed(q), _STOCK_ATTRIBUTE) for q in STOCK_SOURCE_SHA256):
        return APPLIED
    problem = check()
    if problem:
        log.warning(
            "not patching moto (%s): TransactWriteItems keeps copying whole tables and Query keeps "
            "sorting them, a large local table will be slow; review local_cloud/moto_patches.py",
            problem,
        )
        return MISMATCH
    owners = _owners()
    for qualified, replacement in _replacements().items():
        owner_name, _, name = qualified.partition(".")
        setattr(replacement, _STOCK_ATTRIBUTE, getattr(owners[owner_name], name))
        setattr(owners[owner_name], name, replacement)
    log.info(
        "moto %s: TransactWriteItems rolls back per item, Query reads only candidate items "
        "(local_cloud.moto_patches)",
        MOTO_VERSION,
    )
    return APPLIED


def remove() -> None:
    """Put the stock functions back (tests)."""
    owners = _owners()
    for qualified in STOCK_SOURCE_SHA256:
        owner_name, _, name = qualified.partition(".")
        stock = getattr(getattr(owners[owner_name], name), _STOCK_ATTRIBUTE, None)
        if stock is not None:
            setattr(owners[owner_name], name, stock)


# --- 2. Query: candidates instead of the sorted table ---------------------------------------

_query_context = threading.local()


@dataclass(frozen=True)
class _QueryContext:
    table: Any
    index: bool
    hash_key: Any  # base-table Query: the partition
    index_hash: tuple[tuple[str, str, Any], ...]  # index Query: (attribute, type, value) for S and B keys


def _query(self: Any, *args: Any, **kwargs: Any) -> Any:
    """``Table.query`` with ``all_items`` answering candidates for this call (see the module doc)."""
    stock = getattr(_query, _STOCK_ATTRIBUTE)
    bound = _signature(stock).bind(self, *args, **kwargs)
    index_name = bound.arguments.get("index_name")
    if index_name:
        conditions = bound.arguments.get("hash_key_conditions") or []
        index_hash = tuple(
            (name, value.type, value.value) for name, value in conditions if value.type in ("S", "B")
        )
        context = _QueryContext(self, True, None, index_hash)
    else:
        context = _QueryContext(self, False, bound.arguments.get("hash_key"), ())
    previous = getattr(_query_context, "value", None)
    _query_context.value = context
    try:
        return stock(self, *args, **kwargs)
    finally:
        _query_context.value = previous


@functools.cache
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)


def _all_items(self: Any) -> Any:
    context: _QueryContext | None = getattr(_query_context, "value", None)
    if context is None or context.table is not self or (not context.index and context.hash_key is None):
        return getattr(_all_items, _STOCK_ATTRIBUTE)(self)
    if not context.index:
        partition = self.items.get(context.hash_key)
        if partition is None:
            return []
        return list(partition.values()) if self.range_key_attr else [partition]
    buckets = self.items.values()
    items = [i for b in buckets for i in b.values()] if self.range_key_attr else list(buckets)
    for name, kind, value in context.index_hash:
        items = [i for i in items if _may_equal(i.attrs.get(name), kind, value)]
    return items


def _may_equal(attribute: Any, kind: str, value: Any) -> bool:
    """False only when the attribute certainly differs (moto's DynamoType ``!=`` would be True)."""
    return attribute is not None and attribute.type == kind and attribute.value == value


# --- 1. TransactWriteItems: per-item rollback ------------------------------------------------


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

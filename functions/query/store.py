"""Read access to the index table: every read is a GetItem, BatchGetItem or Query on a key.

The one write is an administrator resolving a patient conflict (``CONFLICTS#<site>`` items).

No Scan anywhere: each search starts from a key or an index (see common.keys).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.shared.dynamodb_deserializer import TypeDeserializer
from botocore.exceptions import ClientError
from common import keys

from query.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Item = dict[str, Any]

# Powertools' copy of boto3's deserializer (Binary comes back as bytes): importing
# boto3.dynamodb.types would import boto3 itself. See tests/unit/test_index_store_items.py.
_deserializer = TypeDeserializer()
BATCH_GET_LIMIT = 100


def _plain(item: dict[str, Any]) -> Item:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _string(value: str) -> dict[str, str]:
    """A DynamoDB string attribute value (every key and condition value here is a string)."""
    return {"S": value}


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": _string(pk), "sk": _string(sk)}


def readable_study(item: Item) -> bool:
    """Whether a study item can answer a search: it carries its UID, site and study-level JSON.

    A study is being created while ingest writes it: DynamoDB's UpdateItem and moto's
    differ (moto first stores the key alone, then applies the update in place, so a
    concurrent read meets a key-only item), and counters ``ADD``-ed to a missing item
    would leave one too. Such an item is not a study yet: searches leave it out, as if
    the read came a moment earlier.
    """
    return all(item.get(name) for name in ("study_uid", "site", "json"))


class IndexStore:
    """Reads the index table (DynamoDB); raises StoreError when a call fails."""

    def __init__(self, dynamodb: DynamoDBClient, table_name: str) -> None:
        self.use(dynamodb, table_name)

    def use(self, dynamodb: DynamoDBClient, table_name: str) -> None:
        """Read ``table_name`` through ``dynamodb`` from now on (tests inject their moto client)."""
        self._db = dynamodb
        self._table = table_name

    def get(self, pk: str, sk: str) -> Item | None:
        """The item at (``pk``, ``sk``), or None; raises StoreError."""
        try:
            response = self._db.get_item(TableName=self._table, Key=_key(pk, sk))
        except ClientError as exc:
            raise StoreError(f"get_item failed: {exc}") from exc
        item = response.get("Item")
        return _plain(item) if item else None

    def get_studies(self, site: str, study_uids: list[str]) -> list[Item]:
        """Study items of one site for these UIDs, in the order asked; missing ones, and ones still
        being created (:func:`readable_study`), are left out."""
        found: dict[str, Item] = {}
        unique = list(dict.fromkeys(study_uids))
        for start in range(0, len(unique), BATCH_GET_LIMIT):
            batch = unique[start : start + BATCH_GET_LIMIT]
            request: dict[str, Any] = {
                self._table: {"Keys": [_key(keys.study_pk(site, u), keys.STUDY_SK) for u in batch]}
            }
            while request:
                try:
                    response = self._db.batch_get_item(RequestItems=request)
                except ClientError as exc:
                    raise StoreError(f"batch_get_item failed: {exc}") from exc
                for raw in response.get("Responses", {}).get(self._table, []):
                    item = _plain(raw)
                    if readable_study(item):
                        found[str(item["study_uid"])] = item
                request = dict(response.get("UnprocessedKeys") or {})
        return [found[u] for u in unique if u in found]

    def study_in_sites(self, sites: list[str], study_uid: str) -> list[Item]:
        """The study items with this UID in each of these sites (one BatchGetItem per 100 sites)."""
        found: list[Item] = []
        for start in range(0, len(sites), BATCH_GET_LIMIT):
            request: dict[str, Any] = {
                self._table: {
                    "Keys": [
                        _key(keys.study_pk(s, study_uid), keys.STUDY_SK) for s in sites[start : start + 100]
                    ]
                }
            }
            while request:
                try:
                    response = self._db.batch_get_item(RequestItems=request)
                except ClientError as exc:
                    raise StoreError(f"batch_get_item failed: {exc}") from exc
                plain = (_plain(raw) for raw in response.get("Responses", {}).get(self._table, []))
                found.extend(item for item in plain if readable_study(item))
                request = dict(response.get("UnprocessedKeys") or {})
        return sorted(found, key=lambda item: str(item.get("site", "")))

    def query(
        self,
        pk_name: str,
        pk: str,
        *,
        sk_name: str = "sk",
        sk_prefix: str | None = None,
        sk_between: tuple[str, str] | None = None,
        index: str | None = None,
        forward: bool = True,
    ) -> Iterator[Item]:
        """All items of one partition (of the table or an index), following pagination."""
        names = {"#pk": pk_name}
        values: dict[str, Any] = {":pk": _string(pk)}
        condition = "#pk = :pk"
        if sk_prefix is not None:
            names["#sk"] = sk_name
            values[":prefix"] = _string(sk_prefix)
            condition += " AND begins_with(#sk, :prefix)"
        elif sk_between is not None:
            names["#sk"] = sk_name
            values[":lo"] = _string(sk_between[0])
            values[":hi"] = _string(sk_between[1])
            condition += " AND #sk BETWEEN :lo AND :hi"
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": forward,
        }
        if index:
            kwargs["IndexName"] = index
        while True:
            try:
                response = self._db.query(**kwargs)
            except ClientError as exc:
                raise StoreError(f"query failed: {exc}") from exc
            for raw in response.get("Items", []):
                yield _plain(raw)
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def study_children(self, owner: Item, sk_prefix: str) -> Iterator[Item]:
        """Items of ``owner``'s study (owner: a study, series or instance item), by sort-key prefix."""
        return self.query(
            "pk", keys.study_pk(str(owner["site"]), str(owner["study_uid"])), sk_prefix=sk_prefix
        )

    def in_study(self, owner: Item, sk: str) -> Item | None:
        """One item of the study that ``owner`` belongs to (same site, same study)."""
        return self.get(keys.study_pk(str(owner["site"]), str(owner["study_uid"])), sk)

    def set_conflict_status(self, site: str, sk: str, status: str, by: str) -> Item | None:
        """Resolve a patient conflict item (the only item the query function writes); None if absent."""
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key=_key(keys.conflicts_pk(site), sk),
                UpdateExpression="SET #s = :s, resolved_at = :now, resolved_by = :by",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":s": _string(status),
                    ":now": _string(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                    ":by": _string(by),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise StoreError(f"update_item failed: {exc}") from exc
        return _plain(response["Attributes"])

    def sites(self) -> list[str]:
        """The sites that have received studies (the ``SITES`` partition)."""
        return [str(item["sk"]) for item in self.query("pk", keys.SITES_PK)]

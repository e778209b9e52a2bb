"""Conditional writes into the index table: the first copy of an instance wins, counts stay exact.

Every counter moves in the same DynamoDB transaction as the item it counts:
an instance is Put with ``attribute_not_exists`` together with ``ADD
instance_count`` on its series and study, and a series is created together
with ``ADD series_count`` on its study. A redelivered object, a retried
Lambda or two parts of one series written at the same time therefore cannot
count anything twice: a transaction either happens once or not at all.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from common import keys
from common.names import name_words

from ingest.extract import InstanceRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# 100 items per transaction at most: instances plus the series and study counters.
INSTANCES_PER_TRANSACTION = 48
MAX_CONFLICT_RETRIES = 12

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class IndexWriteError(RuntimeError):
    """The table refused a write for a reason other than an expected condition."""


def _av(value: Any) -> Any:
    return _serializer.serialize(value)


def _item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _av(v) for k, v in values.items() if v not in ("", None, [], set())}


@dataclass(frozen=True)
class ExistingInstance:
    part_id: str
    fingerprint: str
    crc_fingerprint: str = ""
    member: str = ""


class IndexWriter:
    def __init__(self, dynamodb: DynamoDBClient, table_name: str, site: str) -> None:
        self._db = dynamodb
        self._table = table_name
        self._site = site

    def upsert_study(self, record: InstanceRecord) -> None:
        """Create the study item (first values win) and its lookup items; safe to repeat."""
        study = record.study
        study_date = record.value(study, "StudyDate")
        study_time = record.value(study, "StudyTime").replace(":", "")
        fields = {
            "site": self._site,
            "study_uid": record.study_uid,
            "json": json.dumps(study, ensure_ascii=False),
            "PatientID": record.value(study, "PatientID"),
            "StudyDate": study_date,
            "StudyTime": study_time,
            "AccessionNumber": record.value(study, "AccessionNumber"),
            "StudyID": record.value(study, "StudyID"),
            "name_words": name_words(record.value(study, "PatientName")),
            "referring_words": name_words(record.value(study, "ReferringPhysicianName")),
            "gsi2pk": keys.site_pk(self._site),
            "gsi2sk": keys.site_date_sk(study_date, study_time, record.study_uid),
            "created_at": _now(),
        }
        present = {k: v for k, v in fields.items() if v not in ("", [])}
        names = {f"#f{i}": k for i, k in enumerate(present)}
        values = {f":f{i}": _av(v) for i, v in enumerate(present.values())}
        assignments = ", ".join(f"#f{i} = if_not_exists(#f{i}, :f{i})" for i in range(len(present)))
        self._call(
            "update_item",
            TableName=self._table,
            Key=_item({"pk": keys.study_pk(self._site, record.study_uid), "sk": keys.STUDY_SK}),
            UpdateExpression=f"SET {assignments}",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        self._put_lookups(record.study_uid, study_date, self._study_lookups(record))
        # The site registry lets an open (unauthenticated local) API list every site by Query.
        self._call(
            "put_item",
            TableName=self._table,
            Item=_item({"pk": keys.SITES_PK, "sk": self._site}),
        )

    def _study_lookups(self, record: InstanceRecord) -> list[tuple[str, str, str]]:
        """(attribute, partition value, sort value) of each searchable value of a study."""
        study_date = record.value(record.study, "StudyDate") or keys.NO_DATE
        lookups: list[tuple[str, str, str]] = []
        for attr, keyword in (("PID", "PatientID"), ("ACC", "AccessionNumber")):
            value = record.value(record.study, keyword)
            if value:
                lookups.append((attr, value, study_date))
        for word in name_words(record.value(record.study, "PatientName")):
            lookups.append(("NAME", word[0], word))
        return lookups

    def _put_lookups(self, study_uid: str, study_date: str, lookups: Iterable[tuple[str, str, str]]) -> None:
        for attr, key, sort in lookups:
            value = sort if attr == "NAME" else key
            self._call(
                "put_item",
                TableName=self._table,
                Item=_item(
                    {
                        "pk": keys.study_pk(self._site, study_uid),
                        "sk": keys.lookup_sk(attr, value),
                        "study_uid": study_uid,
                        "StudyDate": study_date,
                        "gsi1pk": keys.lookup_pk(self._site, attr, key),
                        "gsi1sk": f"{sort}#{study_uid}",
                    }
                ),
            )

    def ensure_series(self, record: InstanceRecord) -> bool:
        """Create the series item and count it in its study, once. True when created now."""
        modality = record.value(record.series, "Modality")
        series_item = {
            "pk": keys.study_pk(self._site, record.study_uid),
            "sk": keys.series_sk(record.series_uid),
            "site": self._site,
            "study_uid": record.study_uid,
            "series_uid": record.series_uid,
            "json": json.dumps(record.series, ensure_ascii=False),
            "Modality": modality,
            "SeriesNumber": record.value(record.series, "SeriesNumber"),
            "instance_count": 0,
            "created_at": _now(),
        }
        study_update: dict[str, Any] = {
            "TableName": self._table,
            "Key": _item({"pk": keys.study_pk(self._site, record.study_uid), "sk": keys.STUDY_SK}),
            "UpdateExpression": "ADD series_count :one",
            "ExpressionAttributeValues": {":one": _av(1)},
        }
        if modality:
            study_update["UpdateExpression"] += ", modalities :m"
            study_update["ExpressionAttributeValues"][":m"] = _av({modality})
        transaction = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": _item(series_item),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Update": study_update},
        ]
        failed = self._transact(transaction)
        if modality:
            self._put_lookups(
                record.study_uid,
                record.value(record.study, "StudyDate") or keys.NO_DATE,
                [("MOD", modality, record.value(record.study, "StudyDate") or keys.NO_DATE)],
            )
        return not failed

    def add_instances(self, study_uid: str, series_uid: str, items: list[dict[str, Any]]) -> list[str]:
        """Put instance items that do not exist yet and count them; return the SOP UIDs that did."""
        existing: list[str] = []
        for start in range(0, len(items), INSTANCES_PER_TRANSACTION):
            batch = items[start : start + INSTANCES_PER_TRANSACTION]
            while batch:
                failed = self._transact(self._instance_transaction(study_uid, series_uid, batch))
                if not failed:
                    break
                existing.extend(batch[i]["sop_uid"] for i in failed)
                batch = [item for i, item in enumerate(batch) if i not in failed]
        return existing

    def _instance_transaction(
        self, study_uid: str, series_uid: str, batch: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        count = {":n": _av(len(batch))}
        puts: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": _item(item),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for item in batch
        ]
        counters = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _item({"pk": keys.study_pk(self._site, study_uid), "sk": sk}),
                    "UpdateExpression": "ADD instance_count :n",
                    "ExpressionAttributeValues": count,
                }
            }
            for sk in (keys.series_sk(series_uid), keys.STUDY_SK)
        ]
        return puts + counters

    def refresh_instance(self, item: Mapping[str, Any]) -> bool:
        """Rewrite the non-key attributes of an instance item this part owns (re-index after a schema change).

        Conditional on ``part_id``: a part never overwrites the copy another part won.
        Counters are not touched. True when the item was updated.
        """
        fields = {k: v for k, v in item.items() if k not in ("pk", "sk") and v not in ("", None, [], set())}
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":f{i}": _av(v) for i, v in enumerate(fields.values())}
        values[":part"] = _av(item["part_id"])
        try:
            self._db.update_item(
                TableName=self._table,
                Key=_item({"pk": item["pk"], "sk": item["sk"]}),
                UpdateExpression="SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
                ConditionExpression="part_id = :part",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise IndexWriteError(f"update_item failed: {exc}") from exc
        return True

    def existing_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> ExistingInstance:
        response = self._call(
            "get_item",
            TableName=self._table,
            Key=_item(
                {"pk": keys.study_pk(self._site, study_uid), "sk": keys.instance_sk(series_uid, sop_uid)}
            ),
            ProjectionExpression="#p, #f, #c, #m",
            ExpressionAttributeNames={
                "#p": "part_id",
                "#f": "fingerprint",
                "#c": "member_crc32",
                "#m": "member",
            },
            ConsistentRead=True,
        )
        item = {k: _deserializer.deserialize(v) for k, v in response.get("Item", {}).items()}
        return ExistingInstance(
            str(item.get("part_id", "")),
            str(item.get("fingerprint", "")),
            str(item.get("member_crc32", "")),
            str(item.get("member", "")),
        )

    def record_part(self, study_uid: str, series_uid: str, part: Mapping[str, Any]) -> None:
        """Write the part item (first ingest's fields kept) and list the part on its series."""
        part_id = str(part["part_id"])
        first = {k: v for k, v in part.items() if v not in ("", None)}
        names = {f"#f{i}": k for i, k in enumerate(first)}
        values = {f":f{i}": _av(v) for i, v in enumerate(first.values())}
        assignments = ", ".join(f"#f{i} = if_not_exists(#f{i}, :f{i})" for i in range(len(first)))
        values[":one"] = _av(1)
        values[":now"] = _av(_now())
        self._call(
            "update_item",
            TableName=self._table,
            Key=_item({"pk": keys.study_pk(self._site, study_uid), "sk": keys.part_sk(series_uid, part_id)}),
            UpdateExpression=f"SET {assignments}, last_delivery = :now ADD deliveries :one",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        self._call(
            "update_item",
            TableName=self._table,
            Key=_item({"pk": keys.study_pk(self._site, study_uid), "sk": keys.series_sk(series_uid)}),
            UpdateExpression="ADD parts :p",
            ExpressionAttributeValues={":p": _av({part_id})},
        )

    def _transact(self, items: list[dict[str, Any]]) -> set[int]:
        """Run a transaction; return the indexes of items whose condition failed.

        Conflicts with a concurrent writer are retried with jittered backoff; when
        a condition fails nothing was written and the caller retries without those items.
        """
        for attempt in range(MAX_CONFLICT_RETRIES):
            try:
                self._db.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
                return set()
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise IndexWriteError(f"transaction failed: {exc}") from exc
                reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
                failed = {i for i, code in enumerate(reasons) if code == "ConditionalCheckFailed"}
                if failed:
                    return failed
                if not any(code in ("TransactionConflict", "ThrottlingError") for code in reasons):
                    raise IndexWriteError(f"transaction cancelled: {reasons}") from exc
            time.sleep(min(2.0, 0.05 * 2**attempt) * random.random())  # noqa: S311
        raise IndexWriteError("transaction kept conflicting with concurrent writers")

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._db, operation)(**kwargs)
        except ClientError as exc:
            raise IndexWriteError(f"{operation} failed: {exc}") from exc


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

"""Conditional writes into the index table: counts stay exact, versions and patients never merge.

Every counter moves in the same DynamoDB transaction as the item it counts:
an instance is Put with ``attribute_not_exists`` together with ``ADD
instance_count`` on its series and study, and a series is created together
with ``ADD series_count`` on its study. A redelivered object, a retried
Lambda or two parts of one series written at the same time therefore cannot
count anything twice: a transaction either happens once or not at all.

A new version of an indexed instance (same SOP Instance UID, other bytes)
replaces it in the index when it was received later (:meth:`IndexWriter.replace_instance`):
the replaced item is kept as a ``VERSION#`` item in the same transaction, counts
are not touched. The study's patient (``patient_key``) is set by the first part
and only changed by a new version (a correction, :meth:`IndexWriter.correct_study`);
instances of another patient are recorded as a conflict item, never indexed into it.
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
from common.dicom_json import first_text
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
class StudyState:
    """What the index holds for a study before this part: its patient key and study-level DICOM JSON."""

    patient_key: str
    json: str
    created: bool


def same_patient(a: str, b: str) -> bool:
    """Two patient keys (``ingest.extract.patient_key``) name one patient ('' agrees with any)."""
    return not a or not b or a == b


@dataclass(frozen=True)
class ExistingInstance:
    """What the index holds for an instance: its part and fingerprints ('' when absent)."""

    part_id: str
    fingerprint: str
    crc_fingerprint: str = ""
    member: str = ""
    object_version: str = ""
    dataset_sha256: str = ""


def _study_fields(record: InstanceRecord) -> dict[str, Any]:
    """The study item's attributes from ``record``'s study level (a new study's, or a correction's)."""
    study = record.study
    study_date = record.value(study, "StudyDate")
    study_time = record.value(study, "StudyTime").replace(":", "")
    return {
        "json": json.dumps(study, ensure_ascii=False),
        "PatientID": record.value(study, "PatientID"),
        "StudyDate": study_date,
        "StudyTime": study_time,
        "AccessionNumber": record.value(study, "AccessionNumber"),
        "StudyID": record.value(study, "StudyID"),
        "name_words": name_words(record.value(study, "PatientName")),
        "referring_words": name_words(record.value(study, "ReferringPhysicianName")),
        "patient_key": record.patient,
        "gsi2sk": keys.site_date_sk(study_date, study_time, record.study_uid),
    }


class IndexWriter:
    """Writes the index items of one site to the DynamoDB table (layout in ``common.keys``).

    Writes are conditional, so that a redelivered part changes nothing.
    """

    def __init__(self, dynamodb: DynamoDBClient, table_name: str, site: str) -> None:
        self._db = dynamodb
        self._table = table_name
        self._site = site

    def claim_study(self, record: InstanceRecord) -> StudyState:
        """The study's patient key, set from ``record`` if the study has none yet (one UpdateItem)."""
        # The study-level JSON too, so that a reader never meets a study item without it.
        values = {
            ":site": _av(self._site),
            ":uid": _av(record.study_uid),
            ":json": _av(json.dumps(record.study, ensure_ascii=False)),
        }
        update = (
            "SET site = if_not_exists(site, :site), study_uid = if_not_exists(study_uid, :uid), "
            "#j = if_not_exists(#j, :json)"
        )
        names = {"#j": "json"}
        if record.patient:
            values[":p"] = _av(record.patient)
            update += ", patient_key = if_not_exists(patient_key, :p)"
        response = self._call(
            "update_item",
            TableName=self._table,
            Key=_item({"pk": keys.study_pk(self._site, record.study_uid), "sk": keys.STUDY_SK}),
            UpdateExpression=update,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_OLD",
        )
        old = {k: _deserializer.deserialize(v) for k, v in response.get("Attributes", {}).items()}
        return StudyState(
            str(old.get("patient_key") or record.patient), str(old.get("json") or ""), "json" not in old
        )

    def upsert_study(self, record: InstanceRecord) -> None:
        """Create the study item (first values win) and its lookup items; safe to repeat."""
        fields = {
            "site": self._site,
            "study_uid": record.study_uid,
            **_study_fields(record),
            "gsi2pk": keys.site_pk(self._site),
            "created_at": _now(),
        }
        study_date = str(fields["StudyDate"])
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

    def instance_item(self, study_uid: str, series_uid: str, sop_uid: str) -> dict[str, Any] | None:
        """The whole instance item (consistent read), or None."""
        response = self._call(
            "get_item",
            TableName=self._table,
            Key=_item(
                {"pk": keys.study_pk(self._site, study_uid), "sk": keys.instance_sk(series_uid, sop_uid)}
            ),
            ConsistentRead=True,
        )
        raw = response.get("Item")
        return {k: _deserializer.deserialize(v) for k, v in raw.items()} if raw else None

    def replace_instance(self, item: Mapping[str, Any]) -> str:
        """Apply a new version of an indexed instance: ``updated``, ``superseded`` or ``redelivered``.

        Latest received wins (``received_at``, seconds since the epoch, from the
        part's manifest): a later version replaces the index item and the replaced
        one is kept as a ``VERSION#`` item (ties broken by part id, which starts
        with its time), in one transaction conditional on the replaced item's
        ``part_id`` (a concurrent writer makes it retry). An earlier version
        arriving late is only added to the history (``superseded``). Counts never move.
        """
        study_uid, series_uid, sop_uid = str(item["study_uid"]), str(item["series_uid"]), str(item["sop_uid"])
        pk = keys.study_pk(self._site, study_uid)
        for _ in range(MAX_CONFLICT_RETRIES):
            old = self.instance_item(study_uid, series_uid, sop_uid)
            if old is None:
                raise IndexWriteError("instance vanished while a new version was applied")
            if old.get("part_id") == item["part_id"]:
                return "redelivered"
            history = {"pk": pk, "sk": keys.version_sk(series_uid, sop_uid, str(item["part_id"]))}
            if _received(old) > _received(item):
                self._transact(
                    [
                        {
                            "Put": {
                                "TableName": self._table,
                                "Item": _item({**item, **history, "superseded_by": old.get("part_id")}),
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        }
                    ]
                )
                return "superseded"
            kept = {
                **old,
                "sk": keys.version_sk(series_uid, sop_uid, str(old["part_id"])),
                "replaced_by": item["part_id"],
                "replaced_at": _now(),
            }
            failed = self._transact(
                [
                    {"Put": {"TableName": self._table, "Item": _item(kept)}},
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _item(item),
                            "ConditionExpression": "part_id = :old",
                            "ExpressionAttributeValues": {":old": _av(old["part_id"])},
                        }
                    },
                ]
            )
            if not failed:
                return "updated"
        raise IndexWriteError("a new version kept conflicting with concurrent writers")

    def correct_study(self, record: InstanceRecord) -> None:
        """Make ``record``'s study-level attributes (a newer version's) the study's, lookups included.

        Name, ID and accession lookups of the old values are deleted, so that the
        study is found by the corrected values and no longer by the old ones.
        """
        fields: dict[str, Any] = {**_study_fields(record), "corrected_at": _now()}
        study_date = str(fields["StudyDate"])
        present = {k: v for k, v in fields.items() if v not in ("", [])}
        absent = [k for k in fields if k not in present]
        names = {f"#f{i}": k for i, k in enumerate([*present, *absent])}
        values = {f":f{i}": _av(v) for i, v in enumerate(present.values())}
        update = "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(present)))
        if absent:
            update += " REMOVE " + ", ".join(f"#f{len(present) + i}" for i in range(len(absent)))
        pk = keys.study_pk(self._site, record.study_uid)
        self._call(
            "update_item",
            TableName=self._table,
            Key=_item({"pk": pk, "sk": keys.STUDY_SK}),
            UpdateExpression=update,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        wanted = self._study_lookups(record)
        wanted_sks = {keys.lookup_sk(a, s if a == "NAME" else k) for a, k, s in wanted}
        response = self._call(
            "query",
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": _av(pk), ":p": _av("LOOKUP#")},
            ProjectionExpression="sk",
            ConsistentRead=True,
        )
        for raw in response.get("Items", []):
            sk = str(_deserializer.deserialize(raw["sk"]))
            if not sk.startswith(keys.lookup_sk("MOD", "")) and sk not in wanted_sks:
                self._call("delete_item", TableName=self._table, Key=_item({"pk": pk, "sk": sk}))
        self._put_lookups(record.study_uid, study_date or keys.NO_DATE, wanted)

    def correct_series(self, record: InstanceRecord) -> None:
        """Make ``record``'s series-level attributes the series' (a newer version's)."""
        modality = record.value(record.series, "Modality")
        fields = {
            "json": json.dumps(record.series, ensure_ascii=False),
            "SeriesNumber": record.value(record.series, "SeriesNumber"),
            "Modality": modality,
        }
        present = {k: v for k, v in fields.items() if v}
        self._call(
            "update_item",
            TableName=self._table,
            Key=_item(
                {"pk": keys.study_pk(self._site, record.study_uid), "sk": keys.series_sk(record.series_uid)}
            ),
            UpdateExpression="SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(present))),
            ExpressionAttributeNames={f"#f{i}": k for i, k in enumerate(present)},
            ExpressionAttributeValues={f":f{i}": _av(v) for i, v in enumerate(present.values())},
        )

    def record_conflict(self, record: InstanceRecord, part: Mapping[str, Any], study: StudyState) -> None:
        """Write (or extend) the open conflict item of a part whose instances name another patient.

        An item an administrator already resolved keeps its status; the SOP UIDs are added.
        """
        incoming = {k: record.value(record.study, k) for k in ("PatientName", "PatientID")}
        study_level = json.loads(study.json) if study.json else {}
        held = {k: first_text(study_level, k) for k in ("PatientName", "PatientID")}
        values = {
            ":site": _av(self._site),
            ":study": _av(record.study_uid),
            ":series": _av(record.series_uid),
            ":part": _av(part["part_id"]),
            ":key": _av(part["object_key"]),
            ":open": _av("open"),
            ":now": _av(_now()),
            ":in": _av({k: v for k, v in incoming.items() if v}),
            ":held": _av({k: v for k, v in held.items() if v}),
            ":sops": _av(set(part["sop_uids"])),
        }
        self._call(
            "update_item",
            TableName=self._table,
            Key=_item(
                {
                    "pk": keys.conflicts_pk(self._site),
                    "sk": keys.conflict_sk(record.study_uid, record.series_uid, str(part["part_id"])),
                }
            ),
            UpdateExpression=(
                "SET site = :site, study_uid = :study, series_uid = :series, part_id = :part, "
                "object_key = :key, #s = if_not_exists(#s, :open), "
                "created_at = if_not_exists(created_at, :now), "
                "instance_patient = :in, study_patient = :held ADD sop_uids :sops"
            ),
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=values,
        )

    def conflict_status(self, study_uid: str, series_uid: str, part_id: str) -> str:
        """``open``, ``accepted``, ``dismissed`` or '' (no conflict recorded) for a part."""
        response = self._call(
            "get_item",
            TableName=self._table,
            Key=_item(
                {"pk": keys.conflicts_pk(self._site), "sk": keys.conflict_sk(study_uid, series_uid, part_id)}
            ),
            ConsistentRead=True,
        )
        raw = response.get("Item") or {}
        return str(_deserializer.deserialize(raw["status"])) if "status" in raw else ""

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
        """The indexed copy of an instance (consistent read); empty fields when it is not indexed."""
        response = self._call(
            "get_item",
            TableName=self._table,
            Key=_item(
                {"pk": keys.study_pk(self._site, study_uid), "sk": keys.instance_sk(series_uid, sop_uid)}
            ),
            ProjectionExpression="#p, #f, #c, #m, #v, #d",
            ExpressionAttributeNames={
                "#p": "part_id",
                "#f": "fingerprint",
                "#c": "member_crc32",
                "#m": "member",
                "#v": "object_version",
                "#d": "dataset_sha256",
            },
            ConsistentRead=True,
        )
        item = {k: _deserializer.deserialize(v) for k, v in response.get("Item", {}).items()}
        return ExistingInstance(
            str(item.get("part_id", "")),
            str(item.get("fingerprint", "")),
            str(item.get("member_crc32", "")),
            str(item.get("member", "")),
            str(item.get("object_version", "")),
            str(item.get("dataset_sha256", "")),
        )

    def record_part(self, study_uid: str, series_uid: str, part: Mapping[str, Any]) -> None:
        """Write the part item (first ingest's fields kept) and list the part on its series."""
        part_id = str(part["part_id"])
        # The object version is the one just read (an administrator's in-place rewrite makes a new one).
        first = {k: v for k, v in part.items() if v not in ("", None) and k != "object_version"}
        names = {f"#f{i}": k for i, k in enumerate(first)}
        values = {f":f{i}": _av(v) for i, v in enumerate(first.values())}
        assignments = ", ".join(f"#f{i} = if_not_exists(#f{i}, :f{i})" for i in range(len(first)))
        values[":one"] = _av(1)
        values[":now"] = _av(_now())
        if part.get("object_version"):
            names["#ov"] = "object_version"
            values[":ov"] = _av(part["object_version"])
            assignments += ", #ov = :ov"
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


def _received(item: Mapping[str, Any]) -> tuple[float, str]:
    """When an instance version was received, for "latest received wins"."""
    return float(item.get("received_at") or 0), str(item.get("part_id", ""))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

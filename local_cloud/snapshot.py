"""Keep the stand-in's bucket and index across restarts of ``make run``.

moto holds S3 and DynamoDB in memory. At a clean stop the stand-in saves every
current object (bytes, user metadata, content type, tags) and every table item
under ``<data dir>/cloud/``; the next start loads them back into the fresh moto
before the bucket's ObjectCreated notification is configured, so nothing is
ingested twice. An ``incoming/`` part without its ingest report (it arrived while
the stand-in was stopping) is loaded after the notification is on, so the
ingest handler indexes it as it would have.

Layout::

    cloud/snapshot/objects.jsonl   one line per object: key, file, etag, metadata, content type, tags
    cloud/snapshot/objects/NNNNNNNN the object's bytes
    cloud/snapshot/items.jsonl     one DynamoDB item per line (low-level JSON, binary as base64)
    cloud/running                  present while a stand-in runs: a start that finds it knows
                                   the last run did not save (killed), so the snapshot is older

A new snapshot is written next to the old one and swapped in by rename; objects
whose ETag did not change are hard-linked from the old one instead of downloaded.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import keys

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("local_cloud.snapshot")

CLOUD_DIR = "cloud"
SNAPSHOT = "snapshot"
RUNNING = "running"
OBJECTS = "objects.jsonl"
ITEMS = "items.jsonl"
_BATCH = 25  # DynamoDB BatchWriteItem limit
_WORKERS = 8  # moto answers each request in ~15 ms: requests in parallel, objects one at a time each


@dataclass
class Counts:
    """What a save or load moved: objects, of those re-downloaded bytes, items, parts left to ingest."""

    objects: int = 0
    downloaded_bytes: int = 0
    items: int = 0
    to_ingest: list[str] = field(default_factory=list)


def cloud_dir(data_dir: Path) -> Path:
    """The folder of the saved cloud state under ``data_dir``."""
    return data_dir / CLOUD_DIR


def mark_running(data_dir: Path) -> bool:
    """Note that a stand-in runs on ``data_dir``; True when the last one never saved (it was killed)."""
    folder = cloud_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / RUNNING
    unclean = marker.exists()
    marker.write_text(str(os.getpid()))
    return unclean


def mark_stopped(data_dir: Path) -> None:
    """Mark the saved state as cleanly stopped."""
    (cloud_dir(data_dir) / RUNNING).unlink(missing_ok=True)


def exists(data_dir: Path) -> bool:
    """Whether a clean stop saved a bucket and index here."""
    return (cloud_dir(data_dir) / SNAPSHOT / OBJECTS).is_file()


def forget(data_dir: Path) -> bool:
    """Delete the saved bucket and index (``--fresh``); True when there was one."""
    folder = cloud_dir(data_dir) / SNAPSHOT
    existed = folder.exists()
    shutil.rmtree(folder, ignore_errors=True)
    return existed


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"__b64__": base64.b64encode(value).decode()}
    raise TypeError(f"cannot save {type(value).__name__} in a snapshot")


def _decode(obj: dict[str, Any]) -> Any:
    return base64.b64decode(obj["__b64__"]) if set(obj) == {"__b64__"} else obj


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line, object_hook=_decode)


def save(s3: S3Client, ddb: DynamoDBClient, bucket: str, table: str, data_dir: Path) -> Counts:
    """Write the bucket's current objects and the table's items to ``<data_dir>/cloud/snapshot``.

    Raises botocore errors when moto does not answer; the previous snapshot is then kept.
    """
    folder = cloud_dir(data_dir)
    old, new = folder / SNAPSHOT, folder / f"{SNAPSHOT}.new"
    shutil.rmtree(new, ignore_errors=True)
    (new / "objects").mkdir(parents=True)
    previous = {entry["key"]: entry for entry in _lines(old / OBJECTS)}
    counts = Counts()

    def fetch(listed: Any, name: str) -> tuple[dict[str, Any], int]:
        """The object's entry, its bytes in ``new``; how many bytes were downloaded."""
        key, etag, target = listed["Key"], listed["ETag"], new / "objects" / name
        # Tags change without a new ETag (ingest tags the part it indexed): always read them.
        tags = [
            {"Key": t["Key"], "Value": t["Value"]}
            for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        ]
        before = previous.get(key)
        if before and before["etag"] == etag and (old / "objects" / before["file"]).exists():
            os.link(old / "objects" / before["file"], target)
            return {**before, "file": name, "tags": tags}, 0
        head = s3.head_object(Bucket=bucket, Key=key)
        s3.download_file(bucket, key, str(target))
        entry = {
            "key": key,
            "file": name,
            "etag": etag,
            "metadata": head.get("Metadata", {}),
            "content_type": head.get("ContentType", "binary/octet-stream"),
            "tags": tags,
        }
        return entry, int(listed["Size"])

    with open(new / OBJECTS, "w", encoding="utf-8") as index, ThreadPoolExecutor(_WORKERS) as pool:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            listed = page.get("Contents", [])
            names = [f"{counts.objects + n:08d}" for n in range(len(listed))]
            for entry, downloaded in pool.map(fetch, listed, names):
                index.write(json.dumps(entry) + "\n")
                counts.objects += 1
                counts.downloaded_bytes += downloaded
    with open(new / ITEMS, "w", encoding="utf-8") as items:
        for scanned in ddb.get_paginator("scan").paginate(TableName=table):
            for item in scanned.get("Items", []):
                items.write(json.dumps(item, default=_encode) + "\n")
                counts.items += 1
    retired = folder / f"{SNAPSHOT}.old"
    shutil.rmtree(retired, ignore_errors=True)
    if old.exists():
        old.rename(retired)
    new.rename(old)
    shutil.rmtree(retired, ignore_errors=True)
    return counts


def _reported(entries: list[dict[str, Any]]) -> set[str]:
    return {entry["key"] for entry in entries if entry["key"].startswith(keys.REPORTS_PREFIX)}


def _put(s3: S3Client, bucket: str, folder: Path, entry: dict[str, Any]) -> str:
    """Put one saved object back; returns its new VersionId ('' in an unversioned bucket)."""
    with open(folder / "objects" / entry["file"], "rb") as body:
        put = s3.put_object(
            Bucket=bucket,
            Key=entry["key"],
            Body=body,
            Metadata=entry["metadata"],
            ContentType=entry["content_type"],
        )
    if entry["tags"]:
        s3.put_object_tagging(Bucket=bucket, Key=entry["key"], Tagging={"TagSet": entry["tags"]})
    return str(put.get("VersionId") or "")


def _repin(item: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
    """An index item whose ``object_version`` names the reloaded object's new version.

    Reads pass the recorded version (``common.zip_members``), and a fresh moto gives every
    reloaded object a new VersionId; only the current version of a key is saved, and a part
    key is only ever written once, so the key's new version holds the bytes indexed. An item
    of a part that is not reloaded yet (ingested again after start) loses the pin.
    """
    if "object_version" not in item or "S" not in item.get("object_key", {}):
        return item
    version = versions.get(item["object_key"]["S"], "")
    if version:
        return {**item, "object_version": {"S": version}}
    return {k: v for k, v in item.items() if k != "object_version"}


def load(s3: S3Client, ddb: DynamoDBClient, bucket: str, table: str, data_dir: Path) -> Counts:
    """Put the saved objects and items back (call before the ObjectCreated notification is set).

    ``Counts.to_ingest`` lists the ``incoming/`` keys that have no ingest report: pass
    them to ``load_unindexed`` once the notification is configured.
    """
    folder = cloud_dir(data_dir) / SNAPSHOT
    entries = list(_lines(folder / OBJECTS))
    reported = _reported(entries)
    counts = Counts()
    ready = []
    for entry in entries:
        if _needs_ingest(entry["key"], reported):
            counts.to_ingest.append(entry["key"])
        else:
            ready.append(entry)
    versions: dict[str, str] = {}
    with ThreadPoolExecutor(_WORKERS) as pool:
        put = pool.map(lambda entry: _put(s3, bucket, folder, entry), ready)
        for entry, version in zip(ready, put, strict=True):
            versions[entry["key"]] = version
            counts.objects += 1
    batch: list[dict[str, Any]] = []
    for item in _lines(folder / ITEMS):
        batch.append({"PutRequest": {"Item": _repin(item, versions)}})
        counts.items += 1
        if len(batch) == _BATCH:
            _write(ddb, table, batch)
            batch = []
    if batch:
        _write(ddb, table, batch)
    return counts


def load_unindexed(s3: S3Client, bucket: str, data_dir: Path, wanted: list[str]) -> int:
    """Upload the saved ``incoming/`` parts in ``wanted`` (their ObjectCreated events ingest them)."""
    folder = cloud_dir(data_dir) / SNAPSHOT
    chosen = set(wanted)
    done = 0
    for entry in _lines(folder / OBJECTS):
        if entry["key"] in chosen:
            _put(s3, bucket, folder, entry)
            done += 1
    return done


def _needs_ingest(key: str, reported: set[str]) -> bool:
    try:
        study, series, part = keys.parse_incoming_key(key)
    except keys.NotAPartKey:
        return False
    return keys.report_key(study, series, part) not in reported


def _write(ddb: DynamoDBClient, table: str, batch: list[dict[str, Any]]) -> None:
    request: Any = {table: batch}
    while request:
        request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or None

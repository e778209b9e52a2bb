"""A part object is created once and never overwritten; reads serve the bytes that were indexed.

The gateway's uploads and STOW-RS create part keys with ``If-None-Match: *`` (checked
against a moto server, whose S3 implements conditional writes, single PUT and multipart);
every read of an indexed member passes the object version ingest recorded.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from common import keys, part_format
from common.zip_members import MemberLocation
from ingest.process import ingest_object
from pydicom.dataset import Dataset

from edge_gateway.assembler import new_part_id
from edge_gateway.packager import OutboxEntry
from edge_gateway.shipped import ShippedRecord
from edge_gateway.spool import OUTBOX, SHIPPED, Spool
from edge_gateway.uploader import Uploader
from tests.conftest import BUCKET, REGION, Aws
from tests.helpers.dicom_factory import encode, series_from, zip_part
from tests.helpers.part_support import put_site_part
from tests.helpers.query_api import make_api

PART_ID = "20261130T120000Z-0a1b2c3d"


def _outbox_entry(spool: Spool, site: str, instances: list[Dataset], part_id: str = PART_ID) -> OutboxEntry:
    """A zipped part in the outbox as the packager leaves it (zip + descriptor)."""
    first = instances[0]
    members = {f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in instances}
    records = [
        part_format.instance_entry(n.removesuffix(".dcm"), len(d), hashlib.sha256(d).hexdigest(), 1.0e9)
        for n, d in members.items()
    ]
    manifest = part_format.manifest_bytes(
        site, part_id, first.StudyInstanceUID, first.SeriesInstanceUID, records
    )
    zip_path = spool.path(OUTBOX) / f"{part_id}.zip"
    zip_path.write_bytes(zip_part(members, manifest=manifest))
    descriptor = {
        "part_id": part_id,
        "study_uid": first.StudyInstanceUID,
        "series_uid": first.SeriesInstanceUID,
        "gateway_id": site,
        "instance_count": len(members),
        "sop_instance_uids": [ds.SOPInstanceUID for ds in instances],
        "instance_sha256": {r["sop_instance_uid"]: r["sha256"] for r in records},
        "manifest_sha256": part_format.manifest_sha256(manifest),
    }
    spool.write_json(zip_path.with_suffix(".json"), descriptor)
    return OutboxEntry(part_id, zip_path, descriptor)


def _gateway(root: Path, s3: object, **kwargs: int) -> tuple[Spool, Uploader]:
    spool = Spool(root, max_bytes=10**9)
    shipped = ShippedRecord(spool.path(SHIPPED), retention_seconds=3600)
    return spool, Uploader(s3, BUCKET, spool, shipped, **kwargs)  # type: ignore[arg-type]


def _versions(s3: object, key: str) -> list[str]:
    listed = s3.list_object_versions(Bucket=BUCKET, Prefix=key)  # type: ignore[attr-defined]
    return [v["VersionId"] for v in listed.get("Versions", [])]


@pytest.mark.parametrize("multipart_threshold", [64 * 1024**2, 5 * 1024**2], ids=["put", "multipart"])
def test_a_part_key_is_never_overwritten_by_another_gateways_upload(
    endpoint: str, tmp_path: Path, multipart_threshold: int
) -> None:
    # GIVEN a versioned bucket on a moto server and site A's part, uploaded and in S3
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    ct = series_from("CT_small.dcm", 2)
    spool_a, uploader_a = _gateway(tmp_path / "a", s3, multipart_threshold=multipart_threshold)
    entry_a = _outbox_entry(spool_a, "site-a", ct)
    original = entry_a.zip_path.read_bytes()
    assert uploader_a.upload(entry_a)
    # WHEN site B's gateway uploads other content under the same key (the same part id;
    # for multipart, big enough to go up in parts)
    other = series_from("CT_small.dcm", 2, study_uid=ct[0].StudyInstanceUID)
    for ds in other:
        ds.SeriesInstanceUID = ct[0].SeriesInstanceUID
        ds.PatientName = "Other^Patient"
        ds.add_new(0x00091010, "OB", b"\0" * (6 * 1024**2 if multipart_threshold < 64 * 1024**2 else 16))
    spool_b, uploader_b = _gateway(tmp_path / "b", s3, multipart_threshold=multipart_threshold)
    entry_b = _outbox_entry(spool_b, "site-b", other)
    assert entry_b.object_key == entry_a.object_key
    # THEN S3 refuses it: the object is site A's, with its only version
    assert not uploader_b.upload(entry_b)
    stored = s3.get_object(Bucket=BUCKET, Key=entry_a.object_key)
    assert stored["Body"].read() == original
    assert stored["Metadata"]["gateway-id"] == "site-a"
    assert len(_versions(s3, entry_a.object_key)) == 1
    # AND B's entry is kept (quarantined with its reason, shown by `edge-gateway status`), not lost
    [quarantined] = spool_b.quarantined()
    assert quarantined["reason"] == "S3 already holds another part under this part's key: not overwritten"
    assert quarantined["from"] == "outbox"
    kept = spool_b.quarantine_folder(quarantined["id"])
    assert sorted(p.suffix for p in kept.iterdir()) == [".json", ".json", ".zip"]
    assert "not overwritten" in uploader_b.stats.last_error
    assert list(spool_b.path(OUTBOX).iterdir()) == []


def test_a_part_already_in_s3_from_an_earlier_attempt_is_confirmed_not_written_again(
    endpoint: str, tmp_path: Path
) -> None:
    # GIVEN a part that reached S3, but whose confirmation was lost (the outbox still holds it)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    spool, uploader = _gateway(tmp_path / "gw", s3)
    entry = _outbox_entry(spool, "site-a", series_from("CT_small.dcm", 1))
    d = entry.descriptor
    s3.put_object(
        Bucket=BUCKET,
        Key=entry.object_key,
        Body=entry.zip_path.read_bytes(),
        Metadata=part_format.object_metadata(
            "site-a", PART_ID, d["study_uid"], d["series_uid"], 1, d["manifest_sha256"]
        ),
    )
    # WHEN the gateway uploads it again (S3 answers 412: the key exists)
    assert uploader.upload(entry)
    # THEN the entry is confirmed (out of the outbox, counted, in the shipped record), one version in S3
    assert list(spool.path(OUTBOX).iterdir()) == []
    assert uploader.stats.uploaded_parts == 1
    assert spool.quarantined() == []
    assert len(_versions(s3, entry.object_key)) == 1


def _versioned(aws: Aws) -> None:
    aws.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})


def _indexed_versioned_part(aws: Aws) -> tuple[Dataset, bytes, str, str]:
    """One CT instance in part p1 of site-a, in a versioned bucket, indexed from its version:
    (the instance, its bytes, the part's key, the version indexed)."""
    _versioned(aws)
    [ds] = series_from("CT_small.dcm", 1)
    key = put_site_part(aws, "site-a", [ds], "p1")
    version = aws.s3.head_object(Bucket=aws.bucket, Key=key)["VersionId"]
    ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key, version_id=version)
    return ds, encode(ds), key, version


def test_reads_serve_the_bytes_that_were_indexed_even_if_the_key_is_written_again(aws: Aws) -> None:
    # GIVEN a versioned bucket and a part indexed from the version its S3 event named
    _versioned(aws)
    [ds] = series_from("CT_small.dcm", 1)
    ds.PatientName = "First^Version"
    original = encode(ds)
    key = put_site_part(aws, "site-a", [ds], "p1")
    first_version = aws.s3.head_object(Bucket=aws.bucket, Key=key)["VersionId"]
    report = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key, version_id=first_version)
    assert report.indexed == [ds.SOPInstanceUID]
    api = make_api(aws)
    # WHEN something writes the key again with other bytes, bypassing the conditional upload
    ds.PatientName = "Overwritten^Bytes"
    aws.s3.put_object(
        Bucket=aws.bucket, Key=key, Body=zip_part({f"{ds.SOPInstanceUID}.dcm": encode(ds) + b"\0" * 64})
    )
    # THEN the index still records, and every read serves, the version that was indexed
    from query import dependencies

    item = dependencies.store.get(
        keys.study_pk("site-a", ds.StudyInstanceUID),
        keys.instance_sk(ds.SeriesInstanceUID, ds.SOPInstanceUID),
    )
    assert item is not None and item["object_version"] == first_version
    assert MemberLocation.of_item(item).version_id == first_version
    assert dependencies.objects.instance_bytes(item) == original
    path = (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )
    reply = api.call("GET", path, {"accept": 'multipart/related; type="application/dicom"'})
    assert reply.status == 200
    assert original in reply.body
    # AND a redelivery of the first event indexes the first version's bytes, not the new ones
    again = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key, version_id=first_version)
    assert again.redelivered == [ds.SOPInstanceUID]
    part = dependencies.store.get(
        keys.study_pk("site-a", ds.StudyInstanceUID), keys.part_sk(ds.SeriesInstanceUID, "p1")
    )
    assert part is not None and part["object_version"] == first_version
    # AND the download link of the part names that version too
    links = api.get(f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/download")
    assert links.status == 200
    [link] = links.json()["parts"]
    assert f"versionId={first_version}" in link["url"]


def test_stow_creates_part_objects_without_overwriting(aws: Aws) -> None:
    # GIVEN an object under a part key
    from query import dependencies

    make_api(aws)
    key = keys.incoming_key("1.2.3", "1.2.3.4", "stow-x")
    assert dependencies.objects.create(key, b"first", "application/zip", {})
    # WHEN STOW's writer creates the same key again
    created = dependencies.objects.create(key, b"second", "application/zip", {})
    # THEN it is refused and the first bytes stay
    assert not created
    assert aws.s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read() == b"first"


def test_a_study_item_being_created_is_left_out_of_searches_not_a_500(aws: Aws) -> None:
    # GIVEN a study indexed in site A, and a second study whose item holds its key alone: what a
    # reader meets while ingest's first UpdateItem creates it (moto stores the key, then applies
    # the update in place), with its lookup already written by a faster part of the same study
    [ds] = series_from("CT_small.dcm", 1)
    ds.PatientID = "PID-RACE"
    ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, put_site_part(aws, "site-a", [ds], "p1"))
    creating = "1.2.826.0.1.3680043.8.498.77"
    aws.dynamodb.put_item(
        TableName=aws.table,
        Item={"pk": {"S": keys.study_pk("site-a", creating)}, "sk": {"S": keys.STUDY_SK}},
    )
    aws.dynamodb.put_item(
        TableName=aws.table,
        Item={
            "pk": {"S": keys.study_pk("site-a", creating)},
            "sk": {"S": keys.lookup_sk("PID", "PID-RACE")},
            "gsi1pk": {"S": keys.lookup_pk("site-a", "PID", "PID-RACE")},
            "gsi1sk": {"S": f"99991231#{creating}"},
        },
    )
    api = make_api(aws)
    from query import dependencies

    # WHEN the store and QIDO-RS read both studies
    found = dependencies.store.get_studies("site-a", [creating, ds.StudyInstanceUID])
    by_pid = api.get("/dicomweb/studies?PatientID=PID-RACE")
    by_uid = api.get(f"/dicomweb/studies?StudyInstanceUID={creating},{ds.StudyInstanceUID}")
    # THEN the complete study answers and the one being created is left out (before: KeyError, 500)
    assert [s["study_uid"] for s in found] == [ds.StudyInstanceUID]
    for reply in (by_pid, by_uid):
        assert reply.status == 200, reply.body
        assert [s["0020000D"]["Value"][0] for s in json.loads(reply.body)] == [ds.StudyInstanceUID]


def test_the_zip_of_a_part_is_what_the_packager_format_says(tmp_path: Path) -> None:
    # GIVEN an outbox entry built by this test's helper
    spool = Spool(tmp_path / "s", max_bytes=10**9)
    entry = _outbox_entry(spool, "site-a", series_from("CT_small.dcm", 1))
    # THEN its manifest hashes to the descriptor's manifest_sha256 (what the 412 check compares)
    with zipfile.ZipFile(entry.zip_path) as zf:
        manifest = zf.read(part_format.MANIFEST_NAME)
    assert part_format.manifest_sha256(manifest) == entry.descriptor["manifest_sha256"]
    assert entry.object_key == keys.incoming_key(
        entry.descriptor["study_uid"], entry.descriptor["series_uid"], PART_ID
    )


def test_the_stand_ins_restart_repins_reads_to_the_reloaded_objects(aws: Aws, tmp_path: Path) -> None:
    # GIVEN an indexed part in a versioned bucket, saved at a clean stop of the stand-in
    from local_cloud import snapshot
    from local_cloud.template import load_template, table_definition

    ds, original, key, before = _indexed_versioned_part(aws)
    snapshot.save(aws.s3, aws.dynamodb, aws.bucket, aws.table, tmp_path)
    # WHEN a fresh moto (no object versions, an empty table) loads the snapshot
    for version in aws.s3.list_object_versions(Bucket=aws.bucket).get("Versions", []):
        aws.s3.delete_object(Bucket=aws.bucket, Key=version["Key"], VersionId=version["VersionId"])
    aws.dynamodb.delete_table(TableName=aws.table)
    aws.dynamodb.create_table(**table_definition(load_template(), aws.table))
    snapshot.load(aws.s3, aws.dynamodb, aws.bucket, aws.table, tmp_path)
    # THEN the instance item names the reloaded object's version, and reads serve the indexed bytes
    from query import dependencies

    make_api(aws)
    after = aws.s3.head_object(Bucket=aws.bucket, Key=key)["VersionId"]
    assert after != before
    item = dependencies.store.get(
        keys.study_pk("site-a", ds.StudyInstanceUID),
        keys.instance_sk(ds.SeriesInstanceUID, ds.SOPInstanceUID),
    )
    assert item is not None and item["object_version"] == after
    assert dependencies.objects.instance_bytes(item) == original


def test_a_gateway_that_may_not_read_parts_confirms_its_own_earlier_upload(
    endpoint: str, tmp_path: Path
) -> None:
    # GIVEN the part already in S3 from an earlier attempt whose response was lost, and a
    # gateway whose policy grants no s3:GetObject (HeadObject answers 403, as with the
    # template's EdgeGatewayPolicy)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    spool, uploader = _gateway(tmp_path / "gw", s3)
    entry = _outbox_entry(spool, "site-a", series_from("CT_small.dcm", 1), new_part_id())
    earlier = entry.zip_path.read_bytes()
    s3.put_object(Bucket=BUCKET, Key=entry.object_key, Body=earlier)

    def forbidden(**_kwargs: object) -> tuple[object, dict[str, object]]:
        return SimpleNamespace(status_code=403, headers={}), {
            "Error": {"Code": "403", "Message": "Forbidden"}
        }

    s3.meta.events.register("before-call.s3.HeadObject", forbidden)  # type: ignore[arg-type]
    # WHEN it uploads the entry again
    assert uploader.upload(entry)
    # THEN the 412 on its 128-bit random key confirms it: nothing overwritten, nothing
    # quarantined, the entry left the outbox as uploaded
    assert len(entry.part_id.rsplit("-", 1)[1]) == 32
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=entry.object_key).get("Versions", [])
    assert len(versions) <= 1
    assert s3.get_object(Bucket=BUCKET, Key=entry.object_key)["Body"].read() == earlier
    assert spool.quarantined() == []
    assert uploader.stats.uploaded_parts == 1
    assert not entry.zip_path.exists()


def test_an_in_place_rewrite_of_a_part_re_pins_its_items_to_the_new_version(aws: Aws) -> None:
    # GIVEN an indexed part, rewritten in place as an administrator's conflict acceptance does
    # (same bytes, more metadata: a new object version and a new ObjectCreated event)
    ds, original, key, first = _indexed_versioned_part(aws)
    make_api(aws)
    from query import dependencies

    dependencies.objects.rewrite(key, {"conflict-accepted": "true"})
    second = aws.s3.head_object(Bucket=aws.bucket, Key=key)["VersionId"]
    # WHEN its event is ingested, and later the lifecycle expires the noncurrent first version
    report = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key, version_id=second)
    aws.s3.delete_object(Bucket=aws.bucket, Key=key, VersionId=first)
    # THEN the items name the current version and reads still serve the indexed bytes
    assert report.redelivered == [ds.SOPInstanceUID] and report.refreshed == 1
    pk = keys.study_pk("site-a", ds.StudyInstanceUID)
    item = dependencies.store.get(pk, keys.instance_sk(ds.SeriesInstanceUID, ds.SOPInstanceUID))
    part = dependencies.store.get(pk, keys.part_sk(ds.SeriesInstanceUID, "p1"))
    assert item is not None and part is not None
    assert (item["object_version"], part["object_version"]) == (second, second)
    assert dependencies.objects.instance_bytes(item) == original

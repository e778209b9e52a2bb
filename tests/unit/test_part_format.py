"""The part format is one contract: a part the gateway's packager writes opens with the ingest reader."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from common import keys, part_format
from ingest.process import ingest_object
from ingest.zip_part import open_part

from edge_gateway.assembler import Assembler
from edge_gateway.packager import MANIFEST_NAME, Packager
from edge_gateway.shipped import ShippedRecord
from edge_gateway.spool import SHIPPED, Spool
from tests.conftest import Aws
from tests.helpers.dicom_factory import encode, series_from
from tests.helpers.ingest_support import reader_over
from tests.helpers.part_support import put_site_part

STABLE = 10.0


def test_a_packaged_part_round_trips_through_the_ingest_reader_and_ingest(tmp_path: Path, aws: Aws) -> None:
    # GIVEN three real instances zipped by the gateway's packager for site "gw-north"
    spool = Spool(tmp_path / "spool", max_bytes=10**9)
    assembler = Assembler(spool, STABLE, 1000, 10**9)
    packager = Packager(spool, ShippedRecord(spool.path(SHIPPED), retention_seconds=3600), "gw-north")
    instances = series_from("CT_small.dcm", 3)
    for ds in instances:
        data = encode(ds)
        assert spool.store(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, data)
        assembler.stored(ds.StudyInstanceUID, ds.SeriesInstanceUID, len(data))
    [folder] = assembler.close_ready(now=max(s.last_change() for s in spool.open_series()) + STABLE)
    entry = packager.package(folder)
    assert entry is not None
    body = entry.zip_path.read_bytes()
    study, series = instances[0].StudyInstanceUID, instances[0].SeriesInstanceUID
    # THEN the key and manifest are the contract's
    assert MANIFEST_NAME == part_format.MANIFEST_NAME
    assert entry.object_key == keys.incoming_key(study, series, entry.part_id)
    assert keys.parse_incoming_key(entry.object_key) == (study, series, entry.part_id)
    with zipfile.ZipFile(entry.zip_path) as zf:
        manifest_bytes = zf.read(part_format.MANIFEST_NAME)
    assert part_format.manifest_sha256(manifest_bytes) == entry.descriptor["manifest_sha256"]
    # AND the ingest reader opens it: manifest, members, SHA-256 per member
    part = open_part(reader_over(body))
    assert part.manifest["format"] == part_format.MANIFEST_FORMAT
    assert part_format.site_of(part.manifest, {}) == "gw-north"
    assert sorted(m.name for m in part.members) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in instances)
    by_name = {f"{ds.SOPInstanceUID}.dcm": hashlib.sha256(encode(ds)).hexdigest() for ds in instances}
    assert {m.name: m.sha256 for m in part.members} == by_name
    assert set(part_format.received_at(part.manifest)) == set(by_name)
    # AND ingest indexes it into the gateway's site, fingerprinted by the manifest
    metadata = part_format.object_metadata(
        "gw-north", entry.part_id, study, series, len(instances), entry.descriptor["manifest_sha256"]
    )
    aws.s3.put_object(Bucket=aws.bucket, Key=entry.object_key, Body=body, Metadata=metadata)
    report = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, entry.object_key)
    assert report.status == "indexed" and report.site == "gw-north"
    assert all(len(m.dataset_sha256) == 64 and m.dataset_sha256 != m.sha256 for m in part.members)
    assert report.fingerprints == "data set sha256 (manifest)" and len(report.indexed) == 3
    stored = json.loads(
        aws.s3.get_object(Bucket=aws.bucket, Key=keys.report_key(study, series, entry.part_id))["Body"].read()
    )
    assert stored["site"] == "gw-north"


def test_a_site_outside_the_key_alphabet_is_refused_never_filed_elsewhere(aws: Aws) -> None:
    with pytest.raises(part_format.NotASite):
        part_format.site_of({"gateway_id": "a#b"}, {})
    ds = series_from("CT_small.dcm", 1)
    report = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, put_site_part(aws, "a#b", ds, "p1"))
    assert report.status == "rejected" and "not a valid site name" in report.reason
    assert aws.dynamodb.scan(TableName=aws.table)["Count"] == 0
    assert part_format.site_of({}, {"gateway-id": "east"}) == "east"
    assert part_format.site_of({}, {}) == part_format.DEFAULT_SITE

"""Test helper: put a part into the moto bucket exactly as the part format says (common.part_format)."""

from __future__ import annotations

import hashlib
import time

from common import keys, part_format
from pydicom.dataset import Dataset

from tests.conftest import Aws
from tests.helpers.dicom_factory import encode, zip_part


def put_site_part(
    aws: Aws,
    site: str,
    instances: list[Dataset],
    part_id: str,
    *,
    received_at: float | None = None,
    members: dict[str, bytes] | None = None,
    transfer_syntax: str = "",
) -> str:
    """Upload a part of ``site`` (manifest with sha256 and received_at); return its key."""
    first = instances[0]
    members = members or {f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in instances}
    entries = [
        part_format.instance_entry(
            name.removesuffix(".dcm"),
            len(data),
            hashlib.sha256(data).hexdigest(),
            time.time() if received_at is None else received_at,
            transfer_syntax_uid=transfer_syntax,
        )
        for name, data in members.items()
    ]
    manifest = part_format.manifest_bytes(
        site, part_id, first.StudyInstanceUID, first.SeriesInstanceUID, entries
    )
    key = part_format.object_key(first.StudyInstanceUID, first.SeriesInstanceUID, part_id)
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=zip_part(members, manifest=manifest))
    return key


def put_part(aws: Aws, instances: list[Dataset], part_id: str, extra: dict[str, bytes] | None = None) -> str:
    first = instances[0]
    key = keys.incoming_key(first.StudyInstanceUID, first.SeriesInstanceUID, part_id)
    members = {f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in instances}
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=zip_part({**members, **(extra or {})}))
    return key

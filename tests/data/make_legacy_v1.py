"""Write tests/data/legacy_v1.json: a table and bucket filled by the code before sites were partitions.

Run once from a checkout of that code (commit bc3b7b2), e.g.::

    git archive bc3b7b2 functions tests/dicom_factory.py local_cloud template.yaml | tar -x -C /tmp/legacy
    cd /tmp/legacy && PYTHONPATH=functions:. python /path/to/make_legacy_v1.py /path/to/legacy_v1.json

Two studies: one of the default site (a STOW-like part without manifest, two CT
instances) and one of site ``north`` (a gateway part with manifest, one MR instance).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys

import boto3
from moto import mock_aws

from local_cloud.template import load_template, table_definition
from tests.helpers.dicom_factory import encode, series_from, zip_part

os.environ.update({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"})
BUCKET, TABLE = "dicom-test", "dicom-index-test"


def main(out: str) -> None:
    from ingest.process import ingest_object

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        ddb.create_table(**table_definition(load_template(), TABLE))
        ct = series_from("CT_small.dcm", 2)
        for ds in ct:
            ds.PatientName, ds.PatientID, ds.StudyDate = "Legacy^Lena", "PID-L1", "20200101"
        mr = series_from("MR_small.dcm", 1)
        mr[0].PatientName, mr[0].PatientID = "North^Nils", "PID-N1"
        parts = [(ct, "p-default", None), (mr, "p-north", "north")]
        for instances, part_id, site in parts:
            first = instances[0]
            members = {f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in instances}
            manifest = None
            if site:
                manifest = json.dumps(
                    {
                        "format": "dicom-series-part/1",
                        "gateway_id": site,
                        "part_id": part_id,
                        "instances": [
                            {"member": n, "sha256": hashlib.sha256(d).hexdigest(), "received_at": 1.7e9}
                            for n, d in members.items()
                        ],
                    }
                ).encode()
            key = f"incoming/{first.StudyInstanceUID}/{first.SeriesInstanceUID}/{part_id}.zip"
            s3.put_object(Bucket=BUCKET, Key=key, Body=zip_part(members, manifest=manifest))
            ingest_object(s3, ddb, TABLE, BUCKET, key)
        items = ddb.scan(TableName=TABLE)["Items"]
        objects = {}
        for obj in s3.list_objects_v2(Bucket=BUCKET)["Contents"]:
            body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            objects[obj["Key"]] = base64.b64encode(body).decode()
    with open(out, "w") as fh:
        json.dump({"commit": "bc3b7b2", "items": items, "objects": objects}, fh, indent=0, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])

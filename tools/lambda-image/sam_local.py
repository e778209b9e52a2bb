"""Set up `sam local invoke` / `sam local start-api` by hand: moto server container, resources, a sample part.

    .venv/bin/python tools/lambda-image/sam_local.py up       # network, moto container, bucket + table
    .venv/bin/python tools/lambda-image/sam_local.py sample   # upload a 3-instance part, write its S3 event
    .venv/bin/python tools/lambda-image/sam_local.py down     # remove the container and the network

`up` writes .local-run/sam-env.json (for --env-vars); `sample` writes .local-run/sam-event.json
(for -e). The README's "sam local invoke by hand" shows the SAM commands that use them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]
NETWORK = "dicom-sam-local"
CONTAINER = "dicom-sam-moto"
PORT = 5010
BUCKET = "dicom-local"
TABLE = "dicom-index"


def _samconfig_region() -> str:
    """`sam local` gives the functions samconfig's region: create the table in that region of moto."""
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    return str(config.get("default", {}).get("global", {}).get("parameters", {}).get("region", "us-east-1"))


REGION = _samconfig_region()
STATE = ROOT / ".local-run"
ENDPOINT = f"http://127.0.0.1:{PORT}"
# The example UIDs of tests/events (see tests/events/generate.py).
EXAMPLE_STUDY = "1.2.826.0.1.3680043.8.498.1001"
EXAMPLE_SERIES = "1.2.826.0.1.3680043.8.498.1002"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``docker`` with ``args``; raises CalledProcessError when ``check`` and it fails."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def session() -> boto3.Session:
    """A boto3 session for the moto container (placeholder credentials)."""
    # moto accepts any credentials; these never leave this machine.
    return boto3.Session(region_name=REGION, aws_access_key_id="local", aws_secret_access_key="local")  # noqa: S106


def up(image: str) -> None:
    """Start the moto container on the SAM network, create the bucket and table, write sam-env.json."""
    if docker("network", "inspect", NETWORK, check=False).returncode != 0:
        docker("network", "create", NETWORK)
    if docker("container", "inspect", CONTAINER, check=False).returncode != 0:
        publish = f"127.0.0.1:{PORT}:5000"
        docker("run", "-d", "--rm", "--name", CONTAINER, "--network", NETWORK, "-p", publish, image)
    for _ in range(120):
        try:
            with urllib.request.urlopen(f"{ENDPOINT}/moto-api/", timeout=2):  # noqa: S310 - loopback URL
                break
        except OSError:
            time.sleep(0.5)
    else:
        sys.exit(f"moto server did not answer on {ENDPOINT}")
    from local_cloud.template import load_template, table_definition

    s3 = session().client("s3", endpoint_url=ENDPOINT)
    ddb = session().client("dynamodb", endpoint_url=ENDPOINT)
    if BUCKET not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        location = {} if REGION == "us-east-1" else {"LocationConstraint": REGION}
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration=location)  # type: ignore[arg-type]
    if TABLE not in ddb.list_tables()["TableNames"]:
        ddb.create_table(**table_definition(load_template(), TABLE))
    STATE.mkdir(exist_ok=True)
    # --env-vars overrides only variables template.yaml declares (AWS_ENDPOINT_URL is declared empty).
    function_env = {
        "AWS_ENDPOINT_URL": f"http://{CONTAINER}:5000",
        "BUCKET_NAME": BUCKET,
        "TABLE_NAME": TABLE,
    }
    # `sam local start-api` skips JWT authorizers: without claims the query function must run open.
    query_env = {**function_env, "REQUIRE_AUTH": "false"}
    (STATE / "sam-env.json").write_text(
        json.dumps({"IngestFunction": function_env, "QueryFunction": query_env}, indent=2)
    )
    print(f"moto server {ENDPOINT} (functions: http://{CONTAINER}:5000 on network {NETWORK})")
    print(f"--env-vars {STATE / 'sam-env.json'}")


def sample() -> None:
    """Upload a part of three instances to the moto bucket (as the gateway would)."""
    import io
    import zipfile

    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    # Three instances of a new series from pydicom's bundled CT, zipped as the gateway does.
    study, series = generate_uid(), generate_uid()
    members = {}
    for number in (1, 2, 3):
        ds = dcmread(str(get_testdata_file("CT_small.dcm")))
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, number
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        members[f"{ds.SOPInstanceUID}.dcm"] = buffer.getvalue()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    body = archive.getvalue()
    key = f"incoming/{study}/{series}/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-0000cafe.zip"
    session().client("s3", endpoint_url=ENDPOINT).put_object(Bucket=BUCKET, Key=key, Body=body)
    event = json.loads((ROOT / "tests" / "events" / "ingest" / "s3_put_part.json").read_text())
    event["Records"][0]["s3"]["bucket"]["name"] = BUCKET
    event["Records"][0]["s3"]["object"].update(key=key, size=len(body))
    STATE.mkdir(exist_ok=True)
    (STATE / "sam-event.json").write_text(json.dumps(event, indent=2))
    # The committed API events, pointed at this study and series.
    for template in sorted((ROOT / "tests" / "events" / "query").glob("*.json")):
        text = template.read_text().replace(EXAMPLE_STUDY, study).replace(EXAMPLE_SERIES, series)
        (STATE / f"sam-query-{template.name}").write_text(text)
    print(f"uploaded s3://{BUCKET}/{key}")
    print(f"study {study} series {series}")
    print(f"-e {STATE / 'sam-event.json'} (ingest), -e {STATE}/sam-query-*.json (query)")


def down() -> None:
    """Remove the moto container, the function containers and the network."""
    # The moto container and any function container SAM left on the network.
    on_network = docker("ps", "-aq", "--filter", f"network={NETWORK}", check=False).stdout.split()
    docker("rm", "-f", CONTAINER, *on_network, check=False)
    docker("network", "rm", NETWORK, check=False)
    print(f"removed {CONTAINER} and {NETWORK}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``up``, ``sample`` or ``down``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "sample", "down"])
    parser.add_argument("--moto-image", default="dicom-moto-server:local")
    args = parser.parse_args(argv)
    if args.command == "up":
        up(args.moto_image)
    elif args.command == "sample":
        sample()
    else:
        down()


if __name__ == "__main__":
    main()

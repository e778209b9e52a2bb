"""The functions as Lambda runs them: `sam local invoke` (S3 event) and `sam local start-api` (HTTP)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local_cloud.stack import free_port
from tests.helpers.dicom_factory import encode, series_from, zip_part
from tests.sam.conftest import BUCKET, EVENTS, OUTPUT, TABLE, SamStack, timed

pytestmark = pytest.mark.sam


@dataclass
class Ingested:
    study: str
    series: str
    sops: list[str]
    key: str
    result: dict[str, Any]


def _last_json_line(stdout: str) -> dict[str, Any]:
    """`sam local invoke` prints the function's return value as the last line of stdout."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            value: dict[str, Any] = json.loads(line)
            return value
    raise AssertionError(f"no JSON result in:\n{stdout}")


@pytest.fixture(scope="module")
def ingested(sam_stack: SamStack, tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    # GIVEN a real series part in the local bucket, as the gateway writes it
    instances = series_from("CT_small.dcm", 3)
    study, series = str(instances[0].StudyInstanceUID), str(instances[0].SeriesInstanceUID)
    key = f"incoming/{study}/{series}/20261122T200245Z-5a3c0001.zip"
    members = {f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in instances}
    body = zip_part(members)
    sam_stack.s3().put_object(Bucket=BUCKET, Key=key, Body=body)
    # ... and the committed S3 put event, pointed at it
    event = json.loads((EVENTS / "ingest" / "s3_put_part.json").read_text())
    record = event["Records"][0]["s3"]
    record["bucket"].update(name=BUCKET, arn=f"arn:aws:s3:::{BUCKET}")
    record["object"].update(key=key, size=len(body))
    event_file = tmp_path_factory.mktemp("events") / "s3_put.json"
    event_file.write_text(json.dumps(event))

    # WHEN SAM runs the ingest function in the local Lambda image
    stdout = timed(
        "invoke-ingest",
        sam_stack.timings,
        [sam_stack.sam, "local", "invoke", "IngestFunction", "-e", str(event_file), *sam_stack.local_args()],
        env=sam_stack.env,
    )
    return Ingested(study, series, [str(ds.SOPInstanceUID) for ds in instances], key, _last_json_line(stdout))


def test_sam_invoke_ingest_indexes_the_part(sam_stack: SamStack, ingested: Ingested) -> None:
    # THEN the function reports the three instances indexed
    [part] = ingested.result["parts"]
    assert part["key"] == ingested.key
    assert (part["indexed"], part["rejected"], part["duplicate"]) == (3, 0, 0)
    # ... the table holds the study, the series with its count and every instance
    ddb = sam_stack.dynamodb()
    items = ddb.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"SITE#default#STUDY#{ingested.study}"}},
    )["Items"]
    by_sk = {item["sk"]["S"]: item for item in items}
    assert "#STUDY" in by_sk
    assert by_sk[f"SERIES#{ingested.series}"]["instance_count"]["N"] == "3"
    assert {sk for sk in by_sk if sk.startswith("INSTANCE#")} == {
        f"INSTANCE#{ingested.series}#{sop}" for sop in ingested.sops
    }
    # ... and the headers were written next to the part
    listed = sam_stack.s3().list_objects_v2(Bucket=BUCKET, Prefix=f"metadata/{ingested.study}/")
    assert [o["Key"] for o in listed.get("Contents", [])] == [
        ingested.key.replace("incoming/", "metadata/").removesuffix(".zip") + ".json"
    ]


def test_sam_invoke_ingest_twice_counts_once(sam_stack: SamStack, ingested: Ingested, tmp_path: Path) -> None:
    # GIVEN the same event delivered again (S3 delivers at least once)
    event = json.loads((EVENTS / "ingest" / "s3_put_part.json").read_text())
    event["Records"][0]["s3"]["bucket"]["name"] = BUCKET
    event["Records"][0]["s3"]["object"]["key"] = ingested.key
    event_file = tmp_path / "again.json"
    event_file.write_text(json.dumps(event))
    # WHEN it is invoked again
    stdout = timed(
        "invoke-ingest-again",
        sam_stack.timings,
        [sam_stack.sam, "local", "invoke", "IngestFunction", "-e", str(event_file), *sam_stack.local_args()],
        env=sam_stack.env,
    )
    # THEN nothing is indexed twice and the count stays exact
    [part] = _last_json_line(stdout)["parts"]
    assert part["indexed"] == 0
    key = {"pk": {"S": f"SITE#default#STUDY#{ingested.study}"}, "sk": {"S": f"SERIES#{ingested.series}"}}
    series = sam_stack.dynamodb().get_item(TableName=TABLE, Key=key)["Item"]
    assert series["instance_count"]["N"] == "3"


@dataclass
class LocalApi:
    url: str

    def get(self, path: str) -> tuple[int, dict[str, str], Any]:
        request = urllib.request.Request(  # noqa: S310 - loopback URL
            self.url + path, headers={"Accept": "application/dicom+json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback URL
                status, headers, body = response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as error:
            status, headers, body = error.code, dict(error.headers.items()), error.read()
        return status, {k.lower(): v for k, v in headers.items()}, json.loads(body) if body else None


@pytest.fixture(scope="module")
def local_api(sam_stack: SamStack, ingested: Ingested) -> Iterator[LocalApi]:
    port = free_port()
    log = OUTPUT / "sam-start-api.log"
    started = time.monotonic()
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [
                sam_stack.sam, "local", "start-api", "--host", "127.0.0.1", "--port", str(port),
                "--warm-containers", "LAZY", *sam_stack.local_args(),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=sam_stack.env,
        )  # fmt: skip
    try:
        api = LocalApi(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"sam local start-api exited, see {log}"
            try:
                api.get("/no-such-route")
                break
            except OSError:
                assert time.monotonic() < deadline, f"sam local start-api did not listen, see {log}"
                time.sleep(0.5)
        sam_stack.timings["start-api-ready"] = time.monotonic() - started
        yield api
    finally:
        # SIGTERM: SAM stops and removes its warm function containers.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_start_api_searches_studies(local_api: LocalApi, ingested: Ingested, sam_stack: SamStack) -> None:
    # WHEN a client searches studies by UID through `sam local start-api`
    started = time.monotonic()
    status, headers, body = local_api.get(f"/dicomweb/studies?StudyInstanceUID={ingested.study}")
    sam_stack.timings["first-query"] = time.monotonic() - started
    # THEN it gets the study as DICOM JSON, with the counts ingest wrote
    assert status == 200, body
    assert headers["content-type"].startswith("application/dicom+json")
    [study] = body
    assert study["0020000D"]["Value"] == [ingested.study]
    assert study["00201208"]["Value"] == [3]


def test_start_api_lists_series_and_instances(local_api: LocalApi, ingested: Ingested) -> None:
    status, _, series = local_api.get(f"/dicomweb/studies/{ingested.study}/series")
    assert status == 200, series
    assert [s["0020000E"]["Value"][0] for s in series] == [ingested.series]

    path = f"/dicomweb/studies/{ingested.study}/series/{ingested.series}/instances"
    status, _, instances = local_api.get(path)
    assert status == 200, instances
    assert sorted(i["00080018"]["Value"][0] for i in instances) == sorted(ingested.sops)


def test_start_api_series_summary_and_errors(local_api: LocalApi, ingested: Ingested) -> None:
    status, _, summary = local_api.get(f"/api/studies/{ingested.study}/series/{ingested.series}")
    assert status == 200, summary
    assert summary["instance_count"] == 3

    status, _, error = local_api.get("/dicomweb/studies/1.2.3.999/series")
    assert status == 404
    assert error["status"] == 404
    status, _, error = local_api.get("/dicomweb/studies?StudyDate=notadate")
    assert status == 400
    assert error["status"] == 400

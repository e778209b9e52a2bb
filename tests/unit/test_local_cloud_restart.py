"""Restarting the local stand-in: saved bucket and index come back, ports in TIME_WAIT are free,
EMF metrics leave the console, spool-only gateway commands need no bucket and create nothing."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_gateway.cli import gateway_state
from edge_gateway.cli import main as gateway_main
from edge_gateway.config import ConfigError, load
from local_cloud import snapshot
from local_cloud.logs import MetricsSplitter
from local_cloud.stack import check_ports_free
from local_cloud.template import load_template, table_definition
from tests.conftest import Aws

STUDY, SERIES = "1.2.3.4", "1.2.3.4.5"
INDEXED_PART, LATE_PART = "20260101T000000Z-aaaa", "20260101T000001Z-bbbb"


def incoming(part: str) -> str:
    return f"incoming/{STUDY}/{SERIES}/{part}.zip"


def fill(aws: Aws) -> None:
    """One ingested part (with its report and metadata), one part not ingested yet, index items."""
    aws.s3.put_object(
        Bucket=aws.bucket,
        Key=incoming(INDEXED_PART),
        Body=b"PK zip bytes",
        Metadata={"instance-count": "2", "gateway-id": "local-edge"},
        ContentType="application/zip",
    )
    aws.s3.put_object_tagging(
        Bucket=aws.bucket,
        Key=incoming(INDEXED_PART),
        Tagging={"TagSet": [{"Key": "ingest-status", "Value": "indexed"}]},
    )
    aws.s3.put_object(Bucket=aws.bucket, Key=f"reports/{STUDY}/{SERIES}/{INDEXED_PART}.json", Body=b"{}")
    aws.s3.put_object(Bucket=aws.bucket, Key=f"metadata/{STUDY}/{SERIES}/{INDEXED_PART}.json", Body=b"[]")
    aws.s3.put_object(Bucket=aws.bucket, Key=incoming(LATE_PART), Body=b"PK late")
    aws.dynamodb.put_item(
        TableName=aws.table,
        Item={"pk": {"S": f"STUDY#{STUDY}"}, "sk": {"S": "#STUDY"}, "blob": {"B": b"\x00\xff"}},
    )
    aws.dynamodb.put_item(
        TableName=aws.table,
        Item={"pk": {"S": f"STUDY#{STUDY}"}, "sk": {"S": f"SERIES#{SERIES}"}, "n": {"N": "2"}},
    )


def empty(aws: Aws) -> None:
    """What a new moto holds: the bucket and the table, nothing in them."""
    for listed in aws.s3.list_objects_v2(Bucket=aws.bucket).get("Contents", []):
        aws.s3.delete_object(Bucket=aws.bucket, Key=listed["Key"])
    aws.dynamodb.delete_table(TableName=aws.table)
    aws.dynamodb.create_table(**table_definition(load_template(), aws.table))


def keys(aws: Aws) -> set[str]:
    return {o["Key"] for o in aws.s3.list_objects_v2(Bucket=aws.bucket).get("Contents", [])}


def test_bucket_and_index_come_back_after_a_restart(aws: Aws, tmp_path: Path) -> None:
    # GIVEN a bucket and an index, saved at a clean stop
    fill(aws)
    assert not snapshot.exists(tmp_path)
    saved = snapshot.save(aws.s3, aws.dynamodb, aws.bucket, aws.table, tmp_path)
    assert (saved.objects, saved.items) == (4, 2)
    assert snapshot.exists(tmp_path)
    items_before = aws.dynamodb.scan(TableName=aws.table)["Items"]

    # WHEN a new, empty moto is loaded from it
    empty(aws)
    loaded = snapshot.load(aws.s3, aws.dynamodb, aws.bucket, aws.table, tmp_path)

    # THEN every object but the part that was never ingested is back, with metadata and tags
    assert keys(aws) == {
        incoming(INDEXED_PART),
        f"reports/{STUDY}/{SERIES}/{INDEXED_PART}.json",
        f"metadata/{STUDY}/{SERIES}/{INDEXED_PART}.json",
    }
    part = aws.s3.get_object(Bucket=aws.bucket, Key=incoming(INDEXED_PART))
    assert part["Body"].read() == b"PK zip bytes"
    assert part["Metadata"] == {"instance-count": "2", "gateway-id": "local-edge"}
    assert part["ContentType"] == "application/zip"
    tags = aws.s3.get_object_tagging(Bucket=aws.bucket, Key=incoming(INDEXED_PART))["TagSet"]
    assert tags == [{"Key": "ingest-status", "Value": "indexed"}]
    # AND the index items are identical, binary attributes included
    assert sorted(map(str, aws.dynamodb.scan(TableName=aws.table)["Items"])) == sorted(map(str, items_before))
    # AND the part without a report is handed back to be uploaded once notifications are on
    assert loaded.to_ingest == [incoming(LATE_PART)]
    assert snapshot.load_unindexed(aws.s3, aws.bucket, tmp_path, loaded.to_ingest) == 1
    assert aws.s3.get_object(Bucket=aws.bucket, Key=incoming(LATE_PART))["Body"].read() == b"PK late"


def test_a_second_save_links_unchanged_objects_instead_of_downloading(aws: Aws, tmp_path: Path) -> None:
    fill(aws)
    first = snapshot.save(aws.s3, aws.dynamodb, aws.bucket, aws.table, tmp_path)
    aws.s3.put_object(Bucket=aws.bucket, Key=incoming(LATE_PART), Body=b"PK changed")
    failed = {"TagSet": [{"Key": "ingest-status", "Value": "failed"}]}
    aws.s3.put_object_tagging(Bucket=aws.bucket, Key=incoming(INDEXED_PART), Tagging=failed)
    second = snapshot.save(aws.s3, aws.dynamodb, aws.bucket, aws.table, tmp_path)
    assert first.downloaded_bytes > 0
    assert second.downloaded_bytes == len(b"PK changed")  # only the object whose ETag changed
    # ... but tags, which change without a new ETag, are read again
    empty(aws)
    snapshot.load(aws.s3, aws.dynamodb, aws.bucket, aws.table, tmp_path)
    tags = aws.s3.get_object_tagging(Bucket=aws.bucket, Key=incoming(INDEXED_PART))["TagSet"]
    assert tags == failed["TagSet"]
    folder = snapshot.cloud_dir(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [snapshot.SNAPSHOT]  # no .new / .old left


def test_fresh_forgets_the_saved_copy_and_a_killed_run_is_noticed(tmp_path: Path) -> None:
    assert snapshot.mark_running(tmp_path) is False  # first run
    assert snapshot.mark_running(tmp_path) is True  # the last run never reached mark_stopped
    snapshot.mark_stopped(tmp_path)
    assert snapshot.mark_running(tmp_path) is False
    (snapshot.cloud_dir(tmp_path) / snapshot.SNAPSHOT).mkdir()
    assert snapshot.forget(tmp_path) is True
    assert snapshot.forget(tmp_path) is False


def test_a_port_with_connections_in_time_wait_is_free() -> None:
    # GIVEN a server port whose last connection it closed first (so its side lingers in TIME_WAIT)
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()
        client.close()
    out = subprocess.run(["ss", "-tan", f"sport = :{port}"], capture_output=True, text=True, check=False)
    assert "TIME-WAIT" in out.stdout
    # WHEN the stand-in checks it THEN it is not "in use" (no exception)
    check_ports_free("127.0.0.1", {"API": port})


def test_emf_lines_go_to_the_metrics_log_and_the_rest_to_the_console(tmp_path: Path) -> None:
    console = io.StringIO()
    out = MetricsSplitter(console, tmp_path / "metrics.log")
    print('{"_aws":{"Timestamp":1},"BytesFetched":[1,2,3]}', file=out)
    print("a readable line", file=out)
    out.write("partial ")
    out.write("line\n")
    assert console.getvalue() == "a readable line\npartial line\n"
    assert json.loads((tmp_path / "metrics.log").read_text())["BytesFetched"] == [1, 2, 3]


def test_status_and_import_need_no_bucket_but_run_does(tmp_path: Path) -> None:
    assert load(overrides={"spool_dir": tmp_path}, environ={}, spool_only=True).bucket == ""
    with pytest.raises(ConfigError, match="bucket: required"):
        load(overrides={"spool_dir": tmp_path}, environ={})


def test_status_without_a_spool_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "spool"
    assert gateway_main(["status", "--spool-dir", str(missing)]) == 1
    assert not (tmp_path / "no").exists()
    assert "no spool at" in capsys.readouterr().err


def test_status_says_not_running_when_the_pid_is_gone() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead = int(done.stdout)
    now = time.time()
    assert gateway_state({"pid": dead, "written_at": now}, now) == "not running"
    assert gateway_state({"pid": os.getpid(), "written_at": now}, now) == f"running (pid {os.getpid()})"
    assert gateway_state({"pid": os.getpid(), "written_at": now - 3600}, now) == "not running"
    assert gateway_state({}, now) == "not running"

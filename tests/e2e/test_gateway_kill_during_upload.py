"""``kill -9`` of the gateway while boto3 is half-way through sending a part to S3, then a restart.

S3 is a moto server behind ``TrickleProxy``, which slows every upload body under
``incoming/`` to 512 KB/s. The test watches the upload from the proxy and SIGKILLs
the gateway process once part of the body has gone through, so the kill lands
inside the transfer: as a single PUT, or as the UploadPart of a multipart upload
(``multipart_threshold`` 1 MB). After the restart the same part must be sent again
under the same key, once, and every acknowledged instance be in S3 exactly once.
The other recovery moments (mid-association, part closed, zipped) are in
test_gateway_recovery.py.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_cloud.stack import free_port
from tests.e2e.conftest import OUTPUT, wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.gateway_helpers import (
    GatewayProcess,
    MotoServer,
    TrickleProxy,
    bucket_members,
    outbox_entries,
    send_files,
    write_config,
    write_files,
)

pytestmark = pytest.mark.e2e
SUCCESS = 0x0000
BUCKET = "kill-upload-test"
RATE = 512 * 1024  # bytes/s: a 5 MB part takes ~10 s to go through the proxy


@pytest.fixture
def proxied_s3(request: pytest.FixtureRequest) -> Iterator[tuple[MotoServer, TrickleProxy]]:
    OUTPUT.mkdir(exist_ok=True)
    server = MotoServer(OUTPUT / f"moto-{request.node.name}.log", BUCKET)
    server.start()
    proxy = TrickleProxy(server.port, RATE)
    yield server, proxy
    proxy.close()
    server.stop()


@pytest.mark.parametrize("transfer", ["single PUT", "multipart"])
def test_kill9_mid_upload_resends_the_same_part_once_and_loses_nothing(
    proxied_s3: tuple[MotoServer, TrickleProxy], tmp_path: Path, request: pytest.FixtureRequest, transfer: str
) -> None:
    moto, proxy = proxied_s3
    s3 = moto.s3()
    # GIVEN a gateway uploading through the slow proxy, a part closed every ~10 instances (~5 MB)
    port = free_port()
    spool = tmp_path / "spool"
    config = write_config(
        tmp_path / "gateway.toml",
        host="127.0.0.1",
        port=port,
        spool_dir=str(spool),
        bucket=BUCKET,
        region="us-east-1",
        endpoint_url=proxy.url,
        stable_after=1.0,
        max_part_instances=10,
        multipart_threshold=1024**2 if transfer == "multipart" else 64 * 1024**2,
        upload_backoff_base=0.2,
        upload_backoff_cap=1.0,
        gateway_id="kill-upload",
    )
    log = OUTPUT / f"gateway-{request.node.name}.log"
    log.unlink(missing_ok=True)
    gateway = GatewayProcess(config, log, port)
    gateway.start()
    try:
        # ... and a 30-instance series of 0.5 MB images, every instance acknowledged
        instances = series_from("CT_small.dcm", 30)
        for ds in instances:
            ds.Rows = ds.Columns = 512
            ds.PixelData = os.urandom(512 * 512 * 2)
        files = write_files(tmp_path / "series", instances)

        # (in three batches, each once the previous one's part closed: the gateway takes 30
        # instances faster than its 0.5 s limit check, which would make them a single part)
        def closed_parts() -> int:
            seen = {p.name for p in (spool / "parts").iterdir()}
            seen |= {p.stem for p in (spool / "outbox").glob("*.zip")}
            return len(seen | {Path(u.path).stem for u in proxy.uploads})

        for batch in (files[:10], files[10:20], files[20:]):
            before = closed_parts()
            assert send_files(port, batch).statuses == [SUCCESS] * 10
            wait_for(lambda before=before: closed_parts() > before, 30, "the batch's part to close")  # type: ignore[misc]
        everything = {p.stem for p in files}

        # WHEN the gateway is killed (SIGKILL) while a part's body is going to S3
        upload = proxy.wait_for_upload(at_least=128 * 1024, timeout=60)
        gateway.kill9()
        proxy.slow.clear()  # S3 at full speed again for the restarted gateway
        killed_at = upload.forwarded
        key = upload.path.removeprefix(f"/{BUCKET}/")
        part_id = Path(key).stem

        # THEN the transfer really was cut: S3 has no such object, the part waits in the outbox
        assert 0 < killed_at < upload.length, (killed_at, upload.length)
        assert s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount", 0) == 0
        if transfer == "multipart":
            assert "partNumber=" in upload.request_line
            pending = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
            assert [u["Key"] for u in pending] == [key]
        else:
            assert "uploadId=" not in upload.request_line
        descriptor = json.loads((spool / "outbox" / f"{part_id}.json").read_text())
        assert (spool / "outbox" / f"{part_id}.zip").exists()
        interrupted = set(descriptor["sop_instance_uids"])
        assert interrupted and interrupted < everything
        completed_before = proxy.completed(upload.path)
        assert completed_before == 0

        # WHEN the gateway restarts on the same spool
        gateway.start()

        # THEN the outbox and parts empty, every acknowledged instance is in S3 exactly once
        def drained() -> bool:
            return outbox_entries(spool) == 0 and not any((spool / "parts").iterdir())

        wait_for(drained, 60, "outbox and parts to empty")
        found = bucket_members(s3, BUCKET)
        counts = Counter(sop for sops in found.values() for sop in sops)
        assert {sop: n for sop, n in counts.items() if n > 1} == {}, "an instance in two parts"
        assert set(counts) == everything, f"missing: {len(everything - set(counts))}"
        # ... the interrupted part went again under the same key with the same members, sent once
        assert set(found[key]) == interrupted
        assert proxy.completed(upload.path) == 1
        # ... and no part was sent twice after the restart
        for object_key in found:
            assert proxy.completed(f"/{BUCKET}/{object_key}") == 1, object_key
    finally:
        gateway.stop()

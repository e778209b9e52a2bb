"""Soak the gateway's DIMSE path: dcmtk storescu, pynetdicom and Orthanc at once, under CPU load.

Run inside a private network namespace (Orthanc binds every interface)::

    unshare -n sh -c 'ip link set lo up && exec "$@"' sh \\
        .venv/bin/python -m bench.gateway_soak --instances 5600 --work /tmp/soak

The local stack (moto, ingest, API) runs as ``make run`` runs it; the gateway runs as its own
process (``python -m edge_gateway run``) with its defaults, the fast path or, with
``--stock``, stock pynetdicom (``fast_path = false``).
Senders, all at once, each on its own study: 2 dcmtk ``storescu`` streams, 2 pynetdicom
streams (the project's race-free requestor) and 1 Orthanc stream (its REST API pushing by
C-STORE, 128 KB instances), so at least 5 concurrent associations; each stream sends batches
of up to ``--batch`` instances, one association per batch, and about a third of the batches
are aborted at a random instance (storescu killed with SIGKILL, pynetdicom ``abort()``,
Orthanc killed with SIGKILL once its push job has sent part of the batch, then restarted and
the batch pushed again, as a PACS retries), the rest released. Two busy-loop processes keep
both cores busy (``--no-hog`` to leave them out).

Checked, printed as JSON (exit status 1 when any check fails):
- every instance answered 0x0000 is in S3 (zips under incoming/) exactly once and in the
  index (QIDO-RS instance list of its study) exactly once;
- each pynetdicom response answers its request's Message ID (dcmtk checks its own);
- no peer reports a protocol error (storescu error lines outside killed runs, Orthanc failed
  instances, pynetdicom "unexpected" / DIMSE timeout messages).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from edge_gateway import reactor_checkpoint
from local_cloud.stack import LocalCloudConfig, free_port
from tests.helpers import orthanc as pacs
from tests.helpers.orthanc import http, listening, ready, wait

STORESCU = "/usr/bin/storescu"  # pynetdicom's console script of the same name shadows it in a venv
SUCCESS = 0x0000


@dataclass
class Stream:
    """One sender's results."""

    name: str
    study_uid: str
    files: list[Path]
    acknowledged: set[str] = field(default_factory=set)
    sent: int = 0
    associations: int = 0
    aborted: int = 0
    errors: list[str] = field(default_factory=list)


def make_study(folder: Path, count: int, name: str, large: bool = False) -> tuple[str, list[Path]]:
    """``count`` instances of one study; ``large``: 256 x 256 x 16 bit (128 KB) random pixels, so
    that a push takes long enough to be cut half-way."""
    from tests.helpers.dicom_factory import series_from, write_series

    first = series_from("CT_small.dcm", min(count, 100))
    study_uid = str(first[0].StudyInstanceUID)
    instances = list(first)
    while len(instances) < count:
        instances += series_from("CT_small.dcm", min(count - len(instances), 100), study_uid=study_uid)
    for ds in instances:
        ds.PatientID = f"SOAK-{name}"
        if large:
            ds.Rows = ds.Columns = 256
            ds.PixelData = os.urandom(256 * 256 * 2)
    return study_uid, write_series(folder / name, instances)


def batches(files: list[Path], size: int) -> list[list[Path]]:
    return [files[i : i + size] for i in range(0, len(files), size)]


def sop_uid(path: Path) -> str:
    return path.stem  # write_series names each file by its SOP Instance UID


def run_storescu(stream: Stream, port: int, size: int, rng: random.Random) -> None:
    for batch in batches(stream.files, size):
        abort_at = rng.randrange(1, len(batch)) if len(batch) > 1 and rng.random() < 0.35 else None
        stream.associations += 1
        process = subprocess.Popen(
            [STORESCU, "-v", "-aet", "PACS", "-aec", "EDGE", "127.0.0.1", str(port), *map(str, batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        assert process.stdout is not None
        current: Path | None = None
        answered = 0
        killed = False
        for line in process.stdout:
            if line.startswith("I: Sending file: "):
                current = Path(line.removeprefix("I: Sending file: ").strip())
                stream.sent += 1
            elif line.startswith("I: Received Store Response") and current is not None:
                answered += 1
                if "(Success)" in line:
                    stream.acknowledged.add(sop_uid(current))
                else:
                    stream.errors.append(f"storescu: {line.strip()}")
                current = None
                if abort_at is not None and answered >= abort_at and not killed:
                    process.send_signal(signal.SIGKILL)  # the TCP connection is reset: an abort
                    killed = True
            elif line.startswith(("E: ", "F: ")) and not killed:
                stream.errors.append(f"storescu: {line.strip()}")
        process.wait()
        if killed:
            stream.aborted += 1
        elif process.returncode != 0:
            stream.errors.append(f"storescu exited {process.returncode}")


def run_pynetdicom(stream: Stream, port: int, size: int, rng: random.Random) -> None:
    from pydicom import dcmread
    from pynetdicom import AE, evt

    reactor_checkpoint.install()
    requested: list[int] = []
    answered: list[int] = []

    def on_sent(event: Any) -> None:
        command = event.message.command_set
        if command.CommandField == 0x0001:
            requested.append(int(command.MessageID))

    def on_received(event: Any) -> None:
        command = event.message.command_set
        if command.CommandField == 0x8001:
            answered.append(int(command.MessageIDBeingRespondedTo))

    handlers = [(evt.EVT_DIMSE_SENT, on_sent), (evt.EVT_DIMSE_RECV, on_received)]
    ae = AE(ae_title="PACS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    for batch in batches(stream.files, size):
        abort_at = rng.randrange(1, len(batch)) if len(batch) > 1 and rng.random() < 0.35 else None
        stream.associations += 1
        assoc = ae.associate("127.0.0.1", port, ae_title="EDGE", evt_handlers=handlers)
        if not assoc.is_established:
            stream.errors.append("pynetdicom: association not established")
            continue
        for index, path in enumerate(batch):
            if abort_at is not None and index == abort_at:
                assoc.abort()
                stream.aborted += 1
                break
            stream.sent += 1
            rsp = assoc.send_c_store(dcmread(path))
            if "Status" not in rsp:
                stream.errors.append("pynetdicom: no response")
                break
            if int(rsp.Status) == SUCCESS:
                stream.acknowledged.add(sop_uid(path))
            else:
                stream.errors.append(f"pynetdicom: status 0x{int(rsp.Status):04X}")
        else:
            assoc.release()
        if requested[: len(answered)] != answered:
            stream.errors.append("pynetdicom: a response answered another request's Message ID")
        requested.clear()
        answered.clear()


class OrthancProcess:
    """Orthanc (the hospital PACS) as a process that can be killed with SIGKILL and restarted."""

    def __init__(self, config: Path, log: Path, url: str) -> None:
        self.config, self.log, self.url = config, log, url
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with open(self.log, "ab") as log:
            command = [pacs.ORTHANC, str(self.config)]  # appends: the log spans every restart
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait(lambda: http("GET", f"{self.url}/system"), 90, "Orthanc")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            pacs.stop([self.process], timeout=60)


def run_orthanc(stream: Stream, orthanc: OrthancProcess, size: int, rng: random.Random) -> None:
    """Push each batch with an asynchronous C-STORE job; about a third are cut by killing Orthanc
    (SIGKILL) once the job has sent part of the batch: the gateway sees the connection drop
    mid-association (an A-P-ABORT for it). Orthanc is then restarted and the batch pushed again.
    The first batch is always cut, so that even a short run has one."""
    url = orthanc.url
    for index, batch in enumerate(batches(stream.files, size)):
        ids = [http("POST", f"{url}/instances", path.read_bytes())["ID"] for path in batch]
        kill = len(batch) > 1 and (index == 0 or rng.random() < 0.35)
        while True:
            stream.associations += 1
            stream.sent += len(batch)
            body = json.dumps({"Resources": ids, "Synchronous": False}).encode()
            job = http("POST", f"{url}/modalities/edge/store", body)["ID"]
            state = _follow(url, job, kill_after_progress=kill)
            if state is None:  # cut mid-association: restart, and push the batch again
                orthanc.kill9()
                stream.aborted += 1
                orthanc.start()
                kill = False
                continue
            content = state.get("Content", {})
            if state["State"] == "Success" and content.get("FailedInstancesCount", 1) == 0:
                stream.acknowledged.update(sop_uid(p) for p in batch)
            else:
                stream.errors.append(
                    f"orthanc: job {state['State']}, {content.get('FailedInstancesCount')} failed"
                )
            break


def _follow(url: str, job: str, kill_after_progress: bool) -> dict[str, Any] | None:
    """The job's final state; None when it should be cut now (it has sent part of its batch)."""
    while True:
        state: dict[str, Any] = http("GET", f"{url}/jobs/{job}")
        if state["State"] in ("Success", "Failure"):
            return state
        if kill_after_progress and 0 < int(state.get("Progress", 0)) < 100:
            return None
        time.sleep(0.005)


def s3_members(endpoint: str, bucket: str) -> Counter[str]:
    s3 = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",  # moto accepts any
        aws_secret_access_key="testing",  # noqa: S106 - moto's documented stand-in value
    )
    found: Counter[str] = Counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="incoming/"):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith(".zip"):
                continue
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            with zipfile.ZipFile(io.BytesIO(body)) as zf:
                found.update(n.removesuffix(".dcm") for n in zf.namelist() if n.endswith(".dcm"))
    return found


def indexed(api: str, study_uid: str) -> Counter[str]:
    found: Counter[str] = Counter()
    offset = 0
    while True:
        page = http("GET", f"{api}/dicomweb/studies/{study_uid}/instances?limit=1000&offset={offset}")
        if not page:
            return found
        found.update(item["00080018"]["Value"][0] for item in page)
        offset += len(page)


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one scenario, in order
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5000, help="in total, over the 5 streams")
    parser.add_argument("--batch", type=int, default=100, help="instances per association")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-hog", action="store_true", help="leave the CPU hogs out")
    parser.add_argument(
        "--stock", action="store_true", help="the gateway on stock pynetdicom (fast_path = false)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rng = random.Random(args.seed)  # noqa: S311 - which batches abort, not a secret
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("moto", "api", "dicom", "orthanc_http", "orthanc_dicom")}
    share = args.instances // 5
    streams = []
    for name in ("storescu-1", "storescu-2", "pynetdicom-1", "pynetdicom-2", "orthanc"):
        study_uid, files = make_study(work / "data", share, name, large=name == "orthanc")
        streams.append(Stream(name, study_uid, files))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EDGE_GATEWAY_"))}
    env["TCP_NODELAY"] = "1"
    processes: list[subprocess.Popen[bytes]] = []
    with open(work / "local-stack.log", "wb") as stack_log:
        command = [*pacs.local_stack_command(ports, work / "local-run", stable_after=2), "--no-gateway"]
        processes.append(subprocess.Popen(command, stdout=stack_log, stderr=subprocess.STDOUT, env=env))
    gateway_config = work / "gateway.toml"
    gateway_config.write_text(
        "[gateway]\n"
        + "".join(
            f"{key} = {json.dumps(value)}\n"
            for key, value in {
                "host": "127.0.0.1",
                "port": ports["dicom"],
                "ae_title": "EDGE",
                "allowed_calling_aets": ["PACS"],
                "stable_after": 2.0,
                "spool_dir": str(work / "spool"),
                "bucket": LocalCloudConfig().bucket,
                "region": "us-east-1",
                "endpoint_url": f"http://127.0.0.1:{ports['moto']}",
                "gateway_id": "soak",
                "fast_path": not args.stock,
            }.items()
        )
    )
    gateway_env = {**env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with open(work / "gateway.log", "wb") as gateway_log:
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "edge_gateway", "run", "--config", str(gateway_config)],
            stdout=gateway_log, stderr=subprocess.STDOUT, env=gateway_env,
        ))  # fmt: skip
    edge = {"edge": ("EDGE", "127.0.0.1", ports["dicom"])}
    # SaveJobs off: a job cut by SIGKILL is pushed again by run_orthanc, not resumed
    config = pacs.write_config(work, ports, "PACS", edge, name="soak-pacs", SaveJobs=False)
    orthanc = OrthancProcess(config, work / "orthanc.log", f"http://127.0.0.1:{ports['orthanc_http']}")
    hogs: list[subprocess.Popen[bytes]] = []
    api = f"http://127.0.0.1:{ports['api']}"
    moto = f"http://127.0.0.1:{ports['moto']}"
    try:
        orthanc.start()
        wait(lambda: ready(f"{api}/dicomweb/studies?limit=1"), 120, "the local stack")
        wait(lambda: listening(ports["dicom"]) and listening(ports["moto"]), 60, "the gateway's DICOM port")
        if not args.no_hog:
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        started = time.monotonic()
        threads = [
            threading.Thread(target=run_storescu, args=(streams[0], ports["dicom"], args.batch, rng)),
            threading.Thread(target=run_storescu, args=(streams[1], ports["dicom"], args.batch, rng)),
            threading.Thread(target=run_pynetdicom, args=(streams[2], ports["dicom"], args.batch, rng)),
            threading.Thread(target=run_pynetdicom, args=(streams[3], ports["dicom"], args.batch, rng)),
            threading.Thread(target=run_orthanc, args=(streams[4], orthanc, args.batch, rng)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sending = time.monotonic() - started
        acknowledged = set().union(*(s.acknowledged for s in streams))

        def all_indexed() -> bool:
            return all(set(indexed(api, s.study_uid)) >= s.acknowledged for s in streams)

        wait(all_indexed, 600 + args.instances / 5, "every acknowledged instance in the index")
        time.sleep(5)  # parts of unacknowledged (aborted) instances may still be on their way
        in_s3 = s3_members(moto, LocalCloudConfig().bucket)
        in_index: Counter[str] = Counter()
        for s in streams:
            in_index.update(indexed(api, s.study_uid))
        total = time.monotonic() - started
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        orthanc.stop()
        pacs.stop(reversed(processes), timeout=60)  # the gateway first, then the stack
    report = {
        "instances": sum(len(s.files) for s in streams),
        "sent": sum(s.sent for s in streams),
        "acknowledged": len(acknowledged),
        "associations": sum(s.associations for s in streams),
        "aborted_associations": sum(s.aborted for s in streams),
        "cpu_hogs": len(hogs),
        "gateway": "stock pynetdicom" if args.stock else "fast path",
        "orthanc_killed": orthanc.kills,
        "sending_seconds": round(sending, 1),
        "until_indexed_seconds": round(total, 1),
        "acknowledged_per_second": round(len(acknowledged) / sending, 1),
        "missing_in_s3": sum(1 for uid in acknowledged if in_s3[uid] == 0),
        "duplicated_in_s3": sum(1 for uid in acknowledged if in_s3[uid] > 1),
        "missing_in_index": sum(1 for uid in acknowledged if in_index[uid] == 0),
        "duplicated_in_index": sum(1 for uid, n in in_index.items() if n > 1),
        "protocol_errors": [e for s in streams for e in s.errors][:20],
        "streams": {
            s.name: {"sent": s.sent, "acknowledged": len(s.acknowledged), "aborted": s.aborted}
            for s in streams
        },
    }
    print(json.dumps(report))
    failed = report["missing_in_s3"] or report["duplicated_in_s3"] or report["missing_in_index"]
    return 1 if failed or report["duplicated_in_index"] or report["protocol_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

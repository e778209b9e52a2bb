"""Query latency on the local stand-in (p50/p99 over HTTP), next to Orthanc on the same data.

    .venv/bin/python bench/query_latency.py [--studies 200 --series 2 --instances 25 --repeat 100]

Builds ``studies x series x instances`` small synthetic instances (16x16 pixels,
made-up names, no PHI), ships each series as one part zip into ``incoming/`` of
a freshly started ``local-cloud run --no-gateway`` (ingest indexes them through
the real S3 -> SQS -> ingest path), uploads the same files to Orthanc (Debian
``orthanc`` + ``orthanc-dicomweb``), then times the main queries on both.

Orthanc binds every interface, so the whole benchmark re-runs itself inside a
private network namespace (``unshare -n``, loopback only) when Orthanc is used.

The stand-in runs with ``--server-timing``: each of our responses says how long the
query handler ran and how much of that was spent in AWS calls (botocore hooks; see
``local_cloud/aws_timing.py``), and of that how long it waited for the moto server.
Those medians are printed next to the end-to-end figures, so that the part that
measures the emulator (moto, in-memory Python) can be told from the function's own code.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_instance(study: int, series: int, number: int, uids: dict[str, str]) -> tuple[str, bytes]:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SOPClassUID = CT_IMAGE
    ds.PatientName = f"Bench{study:03d}^Synthetic"
    ds.PatientID = f"BENCH-{study:03d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = uids["study_uid"]
    ds.SeriesInstanceUID = uids["series_uid"]
    ds.StudyDate = f"2024{1 + study % 12:02d}{1 + study % 28:02d}"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{study:05d}"
    ds.StudyID = str(study)
    ds.ReferringPhysicianName = "Referrer^Bench"
    ds.Modality = "CT" if series == 0 else "MR"
    ds.SeriesNumber = series + 1
    ds.InstanceNumber = number + 1
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.full((16, 16), number, dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return str(ds.SOPInstanceUID), buffer.getvalue()


def build(studies: int, series: int, instances: int) -> list[dict[str, Any]]:
    """One entry per series: UIDs and member bytes."""
    out = []
    for st in range(studies):
        study_uid = generate_uid()
        for se in range(series):
            uids = {"study_uid": study_uid, "series_uid": generate_uid()}
            members = dict(make_instance(st, se, n, uids) for n in range(instances))
            out.append({"index": st, **uids, "members": members})
    return out


def part_zip(members: dict[str, bytes]) -> bytes:
    """A part as the gateway writes it: ``<SOPInstanceUID>.dcm`` members plus a manifest."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for sop_uid, data in members.items():
            zf.writestr(f"{sop_uid}.dcm", data)
        zf.writestr("manifest.json", json.dumps({"format": "dicom-series-part/1", "gateway_id": "bench"}))
    return buffer.getvalue()


Response = tuple[int, bytes, dict[str, str]]


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            return response.status, response.read(), dict(response.headers.items())
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers.items())


def server_timing(headers: dict[str, str]) -> dict[str, tuple[float, str]]:
    """``Server-Timing`` as {name: (ms, desc)}; a quoted desc may hold commas."""
    out = {}
    for metric in re.split(r",\s*(?=[\w-]+;)", headers.get("Server-Timing", "")):
        name, *params = metric.split(";")
        values = dict(p.split("=", 1) for p in params if "=" in p)
        if name:
            out[name.strip()] = (float(values.get("dur", 0)), values.get("desc", "").strip('"'))
    return out


def wait(probe: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_stack(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    moto_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    log = open(workdir / "stack.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [sys.executable, "-m", "local_cloud", "run", "--no-gateway", "--no-persist", "--server-timing",
         "--moto-port", str(moto_port), "--api-port", str(api_port), "--data-dir", str(workdir / "run")],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    wait(lambda: listening(moto_port) and listening(api_port), 90, "the local stand-in")
    return process, f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{api_port}"


def start_orthanc(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(workdir / "orthanc-storage"),
        "IndexDirectory": str(workdir / "orthanc-index"),
        "HttpPort": port,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (workdir / "orthanc.json").write_text(json.dumps(config))
    log = open(workdir / "orthanc.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([ORTHANC, str(workdir / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    wait(lambda: listening(port), 60, "Orthanc")
    return process, f"http://127.0.0.1:{port}"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Timed:
    """End-to-end samples of one query, plus our Server-Timing split when the server sent it."""

    def __init__(self, call: Callable[[], Response], repeat: int) -> None:
        call()  # warm-up
        self.samples: list[float] = []
        self.splits: list[dict[str, tuple[float, str]]] = []
        self.status = 0
        for _ in range(repeat):
            started = time.perf_counter()
            self.status, _, headers = call()
            self.samples.append((time.perf_counter() - started) * 1000)
            self.splits.append(server_timing(headers))

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 0.99)

    def split(self, name: str) -> float:
        return statistics.median(s.get(name, (0.0, ""))[0] for s in self.splits)

    def own_code(self) -> float:
        return statistics.median(s["handler"][0] - s["aws"][0] for s in self.splits if "handler" in s)

    def calls(self) -> str:
        return self.splits[-1].get("aws", (0.0, ""))[1] if self.splits else ""


def ingest_into_stack(moto: str, api: str, data: list[dict[str, Any]], studies: int, total: int) -> None:
    """One part zip per series into incoming/; wait until the API counts every instance."""
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    started = time.monotonic()
    for i, entry in enumerate(data):
        key = f"incoming/{entry['study_uid']}/{entry['series_uid']}/bench{i:05d}.zip"
        s3.put_object(
            Bucket="dicom-local", Key=key, Body=part_zip(entry["members"]), Metadata={"gateway-id": "bench"}
        )
    uploaded = time.monotonic() - started

    def indexed() -> bool:
        status, body, _ = http(f"{api}/dicomweb/studies?limit=1000&PatientName=bench*")
        if status != 200:
            return False
        counts = [int(s["00201208"]["Value"][0]) for s in json.loads(body)]
        return len(counts) == studies and sum(counts) == total

    # Polled slowly: each probe reads every study, and moto serves ingest too.
    wait(indexed, 3600, f"{total} instances indexed", interval=5)
    seconds = time.monotonic() - started
    print(
        f"ingested {total} instances ({len(data)} parts) through S3 -> SQS -> ingest: {seconds:.1f} s "
        f"({total / seconds:.0f} instances/s; the part uploads took {uploaded:.1f} s of it)",
        flush=True,
    )
    report_part_times(s3, len(data))


def report_part_times(s3: Any, parts: int) -> None:
    """The ingest handler's own time per part (``seconds`` in each ingest report), early vs late parts."""
    seconds: list[tuple[str, float]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="dicom-local", Prefix="reports/"):
        for obj in page.get("Contents", []):
            report = json.loads(s3.get_object(Bucket="dicom-local", Key=obj["Key"])["Body"].read())
            seconds.append((report["part_id"], float(report["seconds"])))
    seconds.sort()  # part ids are bench00000.. in upload order
    values = [s for _, s in seconds]
    if len(values) < 10:
        return
    tenth = max(1, len(values) // 10)
    median, first, last = (statistics.median(v) for v in (values, values[:tenth], values[-tenth:]))
    print(
        f"ingest handler time per part ({len(values)} of {parts} reports): median {median:.2f} s,"
        f" p90 {percentile(values, 0.9):.2f} s, max {max(values):.2f} s; first 10% of parts median "
        f"{first:.2f} s, last 10% median {last:.2f} s",
        flush=True,
    )


def upload_to_orthanc(orthanc: str, data: list[dict[str, Any]]) -> None:
    started = time.monotonic()
    count = 0
    for entry in data:
        for member in entry["members"].values():
            status, body, _ = http(f"{orthanc}/instances", member, {"Content-Type": "application/dicom"})
            if status != 200:
                raise SystemExit(f"Orthanc refused an instance: HTTP {status} {body[:200]!r}")
            count += 1
    seconds = time.monotonic() - started
    _, body, _ = http(f"{orthanc}/statistics")
    stats = json.loads(body)
    print(
        f"uploaded {count} instances to Orthanc (REST POST /instances, one at a time): {seconds:.1f} s "
        f"({count / seconds:.0f} instances/s); Orthanc counts {stats['CountInstances']} instances, "
        f"{stats['CountStudies']} studies",
        flush=True,
    )


Case = tuple[str, str, "Callable[[], Response] | None", bool]


def cases(api: str, orthanc: str, probe: dict[str, Any]) -> list[Case]:
    study, series = probe["study_uid"], probe["series_uid"]
    pid, name = f"BENCH-{probe['index']:03d}", f"Bench{probe['index']:03d}*"
    sop = next(iter(probe["members"]))

    def find(level: str, query: dict[str, str]) -> Callable[[], tuple[int, bytes]]:
        payload = json.dumps({"Level": level, "Query": query, "Expand": True}).encode()
        return lambda: http(f"{orthanc}/tools/find", payload, {"Content-Type": "application/json"})

    dates = "20240301-20240331"
    return [
        ("studies by PatientID", f"/dicomweb/studies?PatientID={pid}",
         find("Study", {"PatientID": pid}), False),
        ("studies by PatientName prefix", f"/dicomweb/studies?PatientName={name}",
         find("Study", {"PatientName": name}), False),
        ("studies by StudyDate range", f"/dicomweb/studies?StudyDate={dates}",
         find("Study", {"StudyDate": dates}), False),
        ("series of a study", f"/dicomweb/studies/{study}/series",
         find("Series", {"StudyInstanceUID": study}), False),
        ("instances of a series", f"/dicomweb/studies/{study}/series/{series}/instances",
         find("Instance", {"SeriesInstanceUID": series}), False),
        ("series metadata", f"/dicomweb/studies/{study}/series/{series}/metadata", None, False),
        ("retrieve one instance", f"/dicomweb/studies/{study}/series/{series}/instances/{sop}", None, True),
        ("patients by ID (JSON)", f"/api/patients?id={pid}", find("Patient", {"PatientID": pid}), False),
        ("series summary (JSON)", f"/api/studies/{study}/series/{series}", None, False),
    ]  # fmt: skip


def report(api: str, orthanc: str, probe: dict[str, Any], repeat: int) -> None:
    dicom = {"Accept": 'multipart/related; type="application/dicom"'}
    print(
        f"{'query':30} {'ours p50/p99':>15} | {'handler':>7} {'own':>6} {'AWS':>6} {'moto':>6} | "
        f"{'Orthanc DICOMweb':>16} {'/tools/find':>13} | ours/DICOMweb p50; AWS calls per request"
    )
    for label, path, orthanc_find, binary in cases(api, orthanc, probe):
        headers = dicom if binary else {}
        ours = Timed(lambda p=path, h=headers: http(f"{api}{p}", None, h), repeat)  # type: ignore[misc]
        row = f"{label:30} {ours.p50:7.1f}/{ours.p99:<7.1f} | "
        row += f"{ours.split('handler'):7.1f} {ours.own_code():6.1f} {ours.split('aws'):6.1f} "
        row += f"{ours.split('aws-wait'):6.1f} | "
        if ours.status != 200:
            row = f"{row} (HTTP {ours.status}) "
        web_p50 = 0.0
        if orthanc and path.startswith("/dicomweb/"):
            web = Timed(lambda p=path, h=headers: http(f"{orthanc}/dicom-web{p[9:]}", None, h), repeat)  # type: ignore[misc]
            web_p50 = web.p50
            row += f"{web.p50:7.1f}/{web.p99:<8.1f} "
        else:
            row += f"{'-':>16} "
        if orthanc and orthanc_find is not None:
            tools = Timed(orthanc_find, repeat)
            row += f"{tools.p50:5.1f}/{tools.p99:<7.1f} | "
        else:
            row += f"{'-':>13} | "
        row += f"{ours.p50 / web_p50:5.1f}x; " if web_p50 else "    -; "
        print(row + ours.calls(), flush=True)
    print(
        "ms. ours: end to end over HTTP; handler = lambda_handler wall time; own = handler minus AWS calls "
        "(the function's code); AWS = time inside botocore calls; moto = of which waiting for the moto "
        "server's HTTP answer (Server-Timing medians, local_cloud/aws_timing.py).",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--series", type=int, default=2)
    parser.add_argument("--instances", type=int, default=25, help="instances per series")
    parser.add_argument("--repeat", type=int, default=100, help="timed runs per query (after one warm-up)")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_orthanc = not args.no_orthanc and Path(ORTHANC).exists() and Path(DICOMWEB_PLUGIN).exists()
    if use_orthanc and not args.in_namespace and shutil.which("unshare"):
        command = f"ip link set lo up && exec {sys.executable} {' '.join(map(str, sys.argv))} --in-namespace"
        return subprocess.call(["unshare", "-n", "sh", "-c", command])

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    total = args.studies * args.series * args.instances
    workdir = Path(tempfile.mkdtemp(prefix="query-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        print(
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} cores, "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )
        started = time.monotonic()
        data = build(args.studies, args.series, args.instances)
        print(
            f"built {total} instances in {len(data)} series: {time.monotonic() - started:.1f} s", flush=True
        )
        stack, moto, api = start_stack(workdir)
        processes.append(stack)
        ingest_into_stack(moto, api, data, args.studies, total)
        orthanc = ""
        if use_orthanc:
            process, orthanc = start_orthanc(workdir)
            processes.append(process)
            upload_to_orthanc(orthanc, data)
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\n{total} instances, {args.studies} studies, {args.repeat} runs each (load average {load})")
        report(api, orthanc, data[len(data) // 2], args.repeat)
        return 0
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

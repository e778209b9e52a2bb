"""Query latency on the local stand-in (p50/p99 over HTTP), next to Orthanc on the same data.

    .venv/bin/python bench/query_latency.py [--studies 200 --series 2 --instances 25 --repeat 30]

Builds ``studies x series x instances`` small synthetic instances (16x16 pixels,
made-up names, no PHI), ships each series as one part zip into ``incoming/`` of
a freshly started ``local-cloud run --no-gateway`` (ingest indexes them through
the real S3 -> SQS -> ingest path), uploads the same files to Orthanc (Debian
``orthanc`` + ``orthanc-dicomweb``), then times the main queries on both.

Orthanc binds every interface, so the whole benchmark re-runs itself inside a
private network namespace (``unshare -n``, loopback only) when Orthanc is used.
"""

from __future__ import annotations

import argparse
import io
import json
import os
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


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


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
        [sys.executable, "-m", "local_cloud", "run", "--no-gateway", "--moto-port", str(moto_port),
         "--api-port", str(api_port), "--data-dir", str(workdir / "run")],
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


def timed(call: Callable[[], tuple[int, bytes]], repeat: int) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, last status) over ``repeat`` calls after one warm-up call."""
    call()
    samples = []
    status = 0
    for _ in range(repeat):
        started = time.perf_counter()
        status, _ = call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return statistics.median(samples), p99, status


def ingest_into_stack(moto: str, api: str, data: list[dict[str, Any]], studies: int, total: int) -> None:
    """One part zip per series into incoming/; wait until the API counts every instance."""
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    started = time.monotonic()
    for i, entry in enumerate(data):
        key = f"incoming/{entry['study_uid']}/{entry['series_uid']}/bench{i:05d}.zip"
        s3.put_object(
            Bucket="dicom-local", Key=key, Body=part_zip(entry["members"]), Metadata={"gateway-id": "bench"}
        )

    def indexed() -> bool:
        status, body = http(f"{api}/dicomweb/studies?limit=1000&PatientName=bench*")
        if status != 200:
            return False
        counts = [int(s["00201208"]["Value"][0]) for s in json.loads(body)]
        return len(counts) == studies and sum(counts) == total

    # Polled slowly: each probe reads every study, and moto serves ingest too.
    wait(indexed, 3600, f"{total} instances indexed", interval=10)
    print(f"ingested through S3 -> ingest: {time.monotonic() - started:.1f} s", flush=True)


def upload_to_orthanc(orthanc: str, data: list[dict[str, Any]]) -> None:
    started = time.monotonic()
    for entry in data:
        for member in entry["members"].values():
            http(f"{orthanc}/instances", member, {"Content-Type": "application/dicom"})
    print(f"uploaded to Orthanc: {time.monotonic() - started:.1f} s", flush=True)


Case = tuple[str, str, "Callable[[], tuple[int, bytes]] | None", bool]


def cases(api: str, orthanc: str, probe: dict[str, Any]) -> list[Case]:
    study, series = probe["study_uid"], probe["series_uid"]
    pid, name = f"BENCH-{probe['index']:03d}", f"Bench{probe['index']:03d}*"
    sop = next(iter(probe["members"]))

    def find(level: str, query: dict[str, str]) -> Callable[[], tuple[int, bytes]]:
        payload = json.dumps({"Level": level, "Query": query, "Expand": True}).encode()
        return lambda: http(f"{orthanc}/tools/find", payload, {"Content-Type": "application/json"})

    dates = "20240301-20240331"
    return [
        ("studies by PatientID", f"/studies?PatientID={pid}", find("Study", {"PatientID": pid}), False),
        ("studies by PatientName prefix", f"/studies?PatientName={name}",
         find("Study", {"PatientName": name}), False),
        ("studies by StudyDate range", f"/studies?StudyDate={dates}",
         find("Study", {"StudyDate": dates}), False),
        ("series of a study", f"/studies/{study}/series", find("Series", {"StudyInstanceUID": study}), False),
        ("instances of a series", f"/studies/{study}/series/{series}/instances",
         find("Instance", {"SeriesInstanceUID": series}), False),
        ("series metadata", f"/studies/{study}/series/{series}/metadata", None, False),
        ("retrieve one instance", f"/studies/{study}/series/{series}/instances/{sop}", None, True),
    ]  # fmt: skip


def report(api: str, orthanc: str, probe: dict[str, Any], repeat: int) -> None:
    dicom = {"Accept": 'multipart/related; type="application/dicom"'}
    print(f"{'query':32} {'ours p50/p99 ms':>18} {'Orthanc DICOMweb':>18} {'Orthanc /tools/find':>20}")
    for label, path, orthanc_find, binary in cases(api, orthanc, probe):
        headers = dicom if binary else {}
        ours = timed(lambda p=path, h=headers: http(f"{api}/dicomweb{p}", None, h), repeat)  # type: ignore[misc]
        row = f"{label:32} {ours[0]:8.1f}/{ours[1]:<8.1f}"
        if ours[2] != 200:
            row += f" (HTTP {ours[2]})"
        if orthanc:
            web = timed(lambda p=path, h=headers: http(f"{orthanc}/dicom-web{p}", None, h), repeat)  # type: ignore[misc]
            row += f" {web[0]:8.1f}/{web[1]:<8.1f}"
            if orthanc_find is not None:
                tools = timed(orthanc_find, repeat)
                row += f" {tools[0]:9.1f}/{tools[1]:<9.1f}"
            row += f"  ratio ours/DICOMweb p50 {ours[0] / web[0]:.2f}"
        print(row, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--series", type=int, default=2)
    parser.add_argument("--instances", type=int, default=25, help="instances per series")
    parser.add_argument("--repeat", type=int, default=30)
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
        print(f"\n{total} instances, {args.studies} studies, {args.repeat} runs each")
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

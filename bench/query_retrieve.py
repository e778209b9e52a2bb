"""Query/retrieve from the edge box next to Orthanc answering from its own storage, same run, as ratios.

- C-FIND, Study Root, STUDY level by PatientID (one association per query, as a
  workstation does): p50 / p99 over ``--finds`` queries.
- C-MOVE of one ``--instances``-instance CT series (512x512 16-bit) to dcmtk ``storescp``
  (``--ignore``: it acknowledges without writing, the same for both senders): instances/s,
  best of ``--repeat``. The gateway is measured cold (every instance read from S3) and warm
  (from its retrieve cache, the second time the prior is pulled).
- C-GET of the same series by dcmtk ``getscu --ignore`` (the gateway from its retrieve cache):
  the sub-operations go over the requester's association, which the gateway accepted, so its
  C-STORE fast path (``pynetdicom_fast_path``: event-driven reactors) applies there.

The gateway reads the local stand-in (moto server). moto copies the whole object on every
ranged GET (docs: VERIFIED.md), which real S3 does not; so the series is received with
``max_part_instances = 25`` (~13 MB parts) to keep that artefact small, and the cold figure
is still a lower bound for S3. Everything runs in a private network namespace (Orthanc and
storescp bind every interface).

    python bench/query_retrieve.py [--instances 300] [--finds 100] [--repeat 2] [--profile DIR]

``--profile DIR`` records the gateway process with py-spy (``pip install py-spy``) during the
C-MOVEs and prints the functions with the most own samples (raw stacks in ``DIR/gateway.txt``).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway_throughput import env, free_port, generate, wait_listening
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.helpers
from tests.helpers import orthanc as pacs
from tests.helpers.orthanc import http, wait

NETNS_FLAG = "EDGE_BENCH_IN_NETNS"
PATIENT_ID = "BENCH-QR-1"


def find_once(port: int, called: str) -> float:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = PATIENT_ID
    query.PatientName = query.StudyDate = query.StudyInstanceUID = query.ModalitiesInStudy = ""
    query.NumberOfStudyRelatedInstances = None
    start = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, called
    results = [int(s.Status) for s, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]
    assoc.release()
    elapsed = time.perf_counter() - start
    assert results == [0xFF00, 0x0000], (called, results)
    return elapsed


def move_once(port: int, called: str, study_uid: str, series_uid: str, count: int) -> float:
    ae = AE(ae_title="BENCH")
    ae.dimse_timeout = 600
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID, query.SeriesInstanceUID = study_uid, series_uid
    start = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, called
    final = None
    for status, _ in assoc.send_c_move(query, "DEST", StudyRootQueryRetrieveInformationModelMove):
        final = status
    assoc.release()
    elapsed = time.perf_counter() - start
    assert final is not None and int(final.Status) == 0, (called, final)
    assert int(final.NumberOfCompletedSuboperations) == count, (called, final)
    return count / elapsed


def get_once(port: int, called: str, study_uid: str, series_uid: str, count: int) -> float:
    """C-GET of the series by dcmtk getscu (``--ignore``: received, not written): instances/s."""
    command = [
        "/usr/bin/getscu", "-v", "-S", "--ignore", "-aet", "BENCH", "-aec", called,
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study_uid}",
        "-k", f"SeriesInstanceUID={series_uid}", "127.0.0.1", str(port),
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env(True), check=False)
    elapsed = time.perf_counter() - start
    text = result.stdout + result.stderr
    done = f"Number of Completed Suboperations : {count}"
    assert result.returncode == 0 and "C-GET Response (Success)" in text and done in text, (
        called,
        text[-800:],
    )
    return count / elapsed


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(args: argparse.Namespace, work: Path) -> None:  # noqa: PLR0915 - a script driver, read top to bottom
    ports = {n: free_port() for n in ("moto", "api", "dicom", "qr", "orthanc_http", "orthanc_dicom", "dest")}
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], log: str, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        handle = open(work / log, "wb")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env={**env(True), **(extra or {})}
        )
        processes.append(process)
        return process

    try:
        print(f"generating {args.instances} CT instances (512x512, 16-bit) ...", flush=True)
        files = generate(work / "series", args.instances)
        for path in files:
            ds = dcmread(path)
            ds.PatientID, ds.PatientName = PATIENT_ID, "Bench^Prior"
            ds.save_as(path)
        first = dcmread(files[0], stop_before_pixels=True)
        study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
        start(pacs.local_stack_command(ports, work / "local-run"), "local-stack.log")
        api = f"http://127.0.0.1:{ports['api']}"
        wait(
            lambda: http("GET", f"{api}/dicomweb/studies?limit=1") is not None or True, 120, "the local stack"
        )
        config = work / "qr.toml"
        config.write_text(
            "[gateway]\n"
            f'host = "127.0.0.1"\nport = {ports["qr"]}\nae_title = "QREDGE"\n'
            f'spool_dir = "{work / "qr-spool"}"\nbucket = "dicom-local"\nregion = "us-east-1"\n'
            f'endpoint_url = "http://127.0.0.1:{ports["moto"]}"\ngateway_id = "bench-edge"\n'
            'table_name = "dicom-index"\nstable_after = 1.0\nmax_part_instances = 25\n'
            f'known_aets = ["DEST=127.0.0.1:{ports["dest"]}"]\nlog_level = "WARNING"\n'
        )
        aws = {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        gateway = start([sys.executable, "-m", "edge_gateway", "run", "--config", str(config)], "qr.log", aws)
        wait_listening(ports["qr"], gateway)
        dest = {"dest": ("DEST", "127.0.0.1", ports["dest"])}
        # the benchmark client is not a declared modality
        always = {"DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True, "DicomAlwaysAllowGet": True}
        orthanc_config = pacs.write_config(work, ports, "ORTHANC", dest, name="bench", **always)
        orthanc = f"http://127.0.0.1:{ports['orthanc_http']}"
        start([pacs.ORTHANC, str(orthanc_config)], "orthanc.log")
        wait(lambda: http("GET", f"{orthanc}/system"), 60, "Orthanc")
        wait_listening(
            ports["dest"],
            start(["/usr/bin/storescp", "--ignore", "-aet", "DEST", str(ports["dest"])], "storescp.log"),
        )
        print(
            "storing the series in Orthanc (REST) and on the gateway (storescu -> S3 -> index) ...",
            flush=True,
        )
        for path in files:
            http("POST", f"{orthanc}/instances", path.read_bytes())
        subprocess.run(
            ["/usr/bin/storescu", "-aec", "QREDGE", "127.0.0.1", str(ports["qr"]), *map(str, files)],
            check=True,
            env=env(True),
        )

        def indexed() -> bool:
            found = http("GET", f"{api}/dicomweb/studies?StudyInstanceUID={study_uid}")
            return bool(found) and found[0]["00201208"]["Value"][0] == len(files)

        wait(indexed, 600, "the series in the index")

        finds: dict[str, list[float]] = {"edge gateway": [], "Orthanc": []}
        for _ in range(args.finds):
            finds["edge gateway"].append(find_once(ports["qr"], "QREDGE"))
            finds["Orthanc"].append(find_once(ports["orthanc_dicom"], "ORTHANC"))
        profiler = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            profiler = subprocess.Popen(
                [spy, "record", "-p", str(gateway.pid), "-r", "200", "-f", "raw", "-o",
                 str(args.profile / "gateway.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)
        moves: dict[str, float] = {}
        moves["edge gateway, cold (from S3)"] = move_once(
            ports["qr"], "QREDGE", study_uid, series_uid, len(files)
        )
        moves["edge gateway, warm (retrieve cache)"] = max(
            move_once(ports["qr"], "QREDGE", study_uid, series_uid, len(files)) for _ in range(args.repeat)
        )
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
        moves["Orthanc (own storage)"] = max(
            move_once(ports["orthanc_dicom"], "ORTHANC", study_uid, series_uid, len(files))
            for _ in range(args.repeat)
        )
        gets: dict[str, float] = {}
        gets["edge gateway (retrieve cache)"] = max(
            get_once(ports["qr"], "QREDGE", study_uid, series_uid, len(files)) for _ in range(args.repeat)
        )
        gets["Orthanc (own storage)"] = max(
            get_once(ports["orthanc_dicom"], "ORTHANC", study_uid, series_uid, len(files))
            for _ in range(args.repeat)
        )
    finally:
        pacs.stop(reversed(processes))

    size = sum(p.stat().st_size for p in files) / len(files) / 1e6
    print(f"\n{len(files)} instances of {size:.2f} MB; {os.cpu_count()} CPUs (shared: figures are noisy)")
    print(f"\nC-FIND, STUDY level by PatientID, one association per query, {args.finds} queries (ms)\n")
    print("| SCP | p50 | p99 | p50 vs Orthanc | p99 vs Orthanc |\n| --- | --- | --- | --- | --- |")
    ref50, ref99 = statistics.median(finds["Orthanc"]), percentile(finds["Orthanc"], 0.99)
    for name, values in finds.items():
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        print(f"| {name} | {p50 * 1000:.1f} | {p99 * 1000:.1f} | {p50 / ref50:.2f} | {p99 / ref99:.2f} |")
    print(f"\nC-MOVE of the series to dcmtk storescp (instances/s, best of {args.repeat})\n")
    print("| SCP | instances/s | vs Orthanc |\n| --- | --- | --- |")
    reference = moves["Orthanc (own storage)"]
    for name, rate in moves.items():
        print(f"| {name} | {rate:.0f} | {rate / reference:.2f} |")
    print(f"\nC-GET of the series by dcmtk getscu --ignore (instances/s, best of {args.repeat})\n")
    print("| SCP | instances/s | vs Orthanc |\n| --- | --- | --- |")
    for name, rate in gets.items():
        print(f"| {name} | {rate:.0f} | {rate / gets['Orthanc (own storage)']:.2f} |")
    if args.profile and (args.profile / "gateway.txt").exists():
        print_profile(args.profile / "gateway.txt")


def print_profile(raw: Path, top: int = 15) -> None:
    """The frames with the most own samples in a py-spy raw file (idle waits included)."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        own[stack.split(";")[-1]] += int(count)
    print(f"\npy-spy, gateway process during the C-MOVEs: {total} samples, most own time\n")
    for frame, count in own.most_common(top):
        print(f"{100 * count / max(total, 1):5.1f}%  {frame[:120]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--finds", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the gateway during the moves")
    args = parser.parse_args()
    if os.environ.get(NETNS_FLAG) != "1":
        script = 'ip link set lo up && exec "$@"'
        command = ["unshare", "-n", "sh", "-c", script, "sh", sys.executable, *sys.argv]
        return subprocess.call(command, env={**os.environ, NETNS_FLAG: "1"})
    with tempfile.TemporaryDirectory(prefix="qr-bench-") as tmp:
        run(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())

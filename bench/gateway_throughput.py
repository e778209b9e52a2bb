"""C-STORE throughput: this gateway against dcmtk storescp, pynetdicom's stock storescp and Orthanc, same run.

One generated CT series (300 x 512x512 16-bit, ~0.5 MB per instance) is sent with
dcmtk ``/usr/bin/storescu`` to each receiver in turn; then by 4 concurrent storescu
processes (a quarter of the series each; dcmtk storescp runs with ``--fork``); then
once with the sender left at its default (Nagle on, as real modalities are).

dcmtk storescp and Orthanc bind every interface, so the whole benchmark re-runs
itself inside a private network namespace (``unshare -n``, loopback up).
Every receiver keeps its default maximum PDU (printed). The gateway runs with
durability on (fsync per instance) and a long quiet period, so what is measured is
the receive path; zipping and upload happen later, off the C-STORE path.

    python bench/gateway_throughput.py [--instances 300] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

STORESCU = "/usr/bin/storescu"
NETNS_FLAG = "EDGE_BENCH_IN_NETNS"
Receiver = Callable[[Path, int, bool], "subprocess.Popen[bytes]"]


def generate(folder: Path, count: int) -> list[Path]:
    """A CT series: CT_small's header, 512x512 16-bit pixels (noise, so nothing compresses it)."""
    source = get_testdata_file("CT_small.dcm")
    assert source is not None
    study, series = generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(1, count + 1):
        ds = dcmread(str(source))
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelData = os.urandom(512 * 512 * 2)
        path = folder / f"{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("receiver did not listen")


def env(nodelay: bool) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EDGE_GATEWAY_"))}
    values.pop("TCP_NODELAY", None)
    if nodelay:
        values["TCP_NODELAY"] = "1"
    return values


def start_gateway(
    store: Path, port: int, _multi: bool, receivers: int | None = None, fast_path: bool = True
) -> subprocess.Popen[bytes]:
    """The gateway as deployed (``receivers`` unset: one process per core), or with ``receivers``."""
    config = store / "gateway.toml"
    config.write_text(
        "[gateway]\n"
        f'host = "127.0.0.1"\nport = {port}\nspool_dir = "{store / "spool"}"\n'
        f'bucket = "bench"\nendpoint_url = "http://127.0.0.1:{free_port()}"\n'
        'stable_after = 3600.0\nmax_spool_bytes = 100000000000\nlog_level = "WARNING"\n'
        + ("" if receivers is None else f"receivers = {receivers}\n")
        + f"fast_path = {str(fast_path).lower()}\n"
    )
    log = open(store / "gateway.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "edge_gateway", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env(True),
    )


def start_storescp(store: Path, port: int, multi: bool) -> subprocess.Popen[bytes]:
    args = (
        ["/usr/bin/storescp", "-aet", "EDGE", "-od", str(store)] + (["--fork"] if multi else []) + [str(port)]
    )
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(True))


def start_pynetdicom(store: Path, port: int, _multi: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pynetdicom", "storescp", str(port), "-aet", "EDGE", "-od", str(store), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(True),
    )


def start_orthanc(store: Path, port: int, _multi: bool) -> subprocess.Popen[bytes]:
    config = store / "orthanc.json"
    config.write_text(
        json.dumps(
            {
                "Name": "bench",
                "StorageDirectory": str(store / "storage"),
                "IndexDirectory": str(store / "index"),
                "DicomAet": "EDGE",
                "DicomPort": port,
                "HttpPort": free_port(),
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "Plugins": [],
            }
        )
    )
    return subprocess.Popen(
        ["/usr/sbin/Orthanc", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(True),
    )


def start_gateway_1(store: Path, port: int, multi: bool) -> subprocess.Popen[bytes]:
    return start_gateway(store, port, multi, receivers=1)


def start_gateway_stock(store: Path, port: int, multi: bool) -> subprocess.Popen[bytes]:
    return start_gateway(store, port, multi, fast_path=False)


RECEIVERS: dict[str, Receiver] = {
    "edge gateway": start_gateway,
    "edge gateway (receivers = 1)": start_gateway_1,
    "edge gateway (fast_path = false: stock pynetdicom)": start_gateway_stock,
    "dcmtk storescp": start_storescp,
    "pynetdicom storescp": start_pynetdicom,
    "Orthanc": start_orthanc,
}
MAX_PDU = {
    "edge gateway": "262144 (max_pdu default)",
    "edge gateway (receivers = 1)": "262144",
    "edge gateway (fast_path = false: stock pynetdicom)": "262144",
    "dcmtk storescp": "16384 (default)",
    "pynetdicom storescp": "16382 (default)",
    "Orthanc": "16384 (default)",
}


@contextmanager
def receiver(name: str, work: Path, multi: bool) -> Iterator[tuple[int, int]]:
    """The receiver's port and PID, while it runs."""
    store = Path(tempfile.mkdtemp(prefix="recv-", dir=work))
    port = free_port()
    process = RECEIVERS[name](store, port, multi)
    try:
        wait_listening(port, process)
        time.sleep(0.5)  # Orthanc listens before it is ready for associations
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(store, ignore_errors=True)


def send(port: int, shares: list[list[Path]], nodelay: bool) -> float:
    """Seconds for all senders (one storescu per share, concurrently) to finish."""
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            [STORESCU, "-aet", "BENCH", "-aec", "EDGE", "127.0.0.1", str(port), *map(str, share)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env(nodelay),
        )
        for share in shares
    ]
    failures = [p.communicate()[1] for p in senders if p.wait() != 0]
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"storescu failed: {failures[0][-500:]!r}")
    return elapsed


def measure(name: str, work: Path, files: list[Path], senders: int, nodelay: bool, repeat: int) -> float:
    shares = [files[i::senders] for i in range(senders)]
    best = 0.0
    for _ in range(repeat):
        with receiver(name, work, senders > 1) as (port, _pid):
            best = max(best, len(files) / send(port, shares, nodelay))
    return best


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (receiver processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = {
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    }
    return own + sum(cpu_seconds(child) for child in children)


def idle_cost(name: str, work: Path, associations: int = 4, seconds: float = 10.0) -> float:
    """Percent of a core the receiver (all its processes) burns while ``associations`` stay idle."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    with receiver(name, work, False) as (port, pid):
        ae = AE(ae_title="BENCH")
        ae.add_requested_context(Verification)
        open_ = [ae.associate("127.0.0.1", port, ae_title="EDGE") for _ in range(associations)]
        try:
            assert all(a.is_established for a in open_), "association refused"
            time.sleep(1.0)
            before, started = cpu_seconds(pid), time.monotonic()
            time.sleep(seconds)
            return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)
        finally:
            for assoc in open_:
                assoc.release()


def table(title: str, rates: dict[str, float]) -> None:
    reference = rates["edge gateway"]
    print(f"\n{title}")
    print("| receiver | instances/s | ratio to this gateway |\n| --- | ---: | ---: |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} | {rate / reference:.2f} |")


def checks(one: dict[str, float], four: dict[str, float]) -> None:
    """The targets of issue 11, against the references measured in this same run."""
    gateway = one["edge gateway"]
    targets = [
        ("one association >= 1.5x pynetdicom storescp", "pynetdicom storescp", one, 1.5),
        ("one association >= Orthanc", "Orthanc", one, 1.0),
    ]
    print("\ntargets (this run)")
    for text, reference, rates, factor in targets:
        if reference in rates:
            ratio = gateway / rates[reference]
            print(f"- {text}: {ratio:.2f}x {'met' if ratio >= factor else 'NOT met'}")
    if "dcmtk storescp" in four:
        ratio = four["edge gateway"] / four["dcmtk storescp"]
        print(
            f"- 4 senders >= 0.5x dcmtk storescp --fork: {ratio:.2f}x {'met' if ratio >= 0.5 else 'NOT met'}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2, help="runs per receiver; the best is reported")
    parser.add_argument("--receivers", default=",".join(RECEIVERS), help="comma-separated subset")
    args = parser.parse_args()
    if os.environ.get(NETNS_FLAG) != "1":
        # Re-run inside a private network namespace: storescp and Orthanc bind every interface.
        script = 'ip link set lo up && exec "$@"'
        command = ["unshare", "-n", "sh", "-c", script, "sh", sys.executable, *sys.argv]
        return subprocess.call(command, env={**os.environ, NETNS_FLAG: "1"})
    names = [n for n in args.receivers.split(",") if n]
    assert "edge gateway" in names, "the gateway is the reference"
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        work = Path(tmp)
        print(f"generating {args.instances} CT instances (512x512, 16-bit) ...", flush=True)
        files = generate(work / "series", args.instances)
        size = sum(p.stat().st_size for p in files) / len(files) / 1e6
        print(f"{len(files)} files, {size:.2f} MB each; {os.cpu_count()} CPUs (shared: figures are noisy)")
        print("maximum PDU per receiver: " + "; ".join(f"{n}: {MAX_PDU[n]}" for n in names))
        one = {n: measure(n, work, files, 1, True, args.repeat) for n in names}
        table("one association, sender with TCP_NODELAY=1", one)
        four = {n: measure(n, work, files, 4, True, args.repeat) for n in names}
        four_names = {("dcmtk storescp --fork" if n == "dcmtk storescp" else n): r for n, r in four.items()}
        table("4 concurrent senders (a quarter of the series each), TCP_NODELAY=1", four_names)
        default = {
            n: measure(n, work, files, 1, False, 1) for n in ("edge gateway", "dcmtk storescp") if n in names
        }
        table("one association, sender at its default (Nagle on)", default)
        checks(one, four)
        idle = {n: idle_cost(n, work) for n in ("edge gateway", "pynetdicom storescp") if n in names}
        print("\n4 associations open and idle for 10 s: receiver CPU, % of one core")
        print("| receiver | CPU % |\n| --- | ---: |")
        for name, percent in idle.items():
            print(f"| {name} | {percent:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

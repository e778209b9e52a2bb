"""Ingest benchmark: header-only ranged reads versus a naive whole-object baseline, same run, same S3.

Generates a CT part (300 x 512x512 16-bit instances, ~160 MB, STORED) and,
with ``--big``, a 3,000-instance part (~1.6 GB, STORED, written streaming: the
generator holds one instance at a time). Serves them from ``bench/s3_stub.py``
(file-backed, 20 ms per request, 80 MB/s per connection by default) and runs,
each in a child process so that its peak RSS (``ru_maxrss``) is its own:

- ``baseline``: one GET of the whole object into memory, ``dcmread`` of every member
  in full (pixel data included), the same header extraction;
- ``ingest``: ``ingest.process.ingest_object`` as the Lambda runs it (central
  directory, then each member's first block in parallel through one presigned
  URL) at read concurrency 1, 2, 4, 8, 16, 32;
- ``ingest-boto``: the same with one botocore ``get_object`` per ranged GET.

DynamoDB is replaced by a null client in both (the bench is about reading S3);
the metadata and report PUTs go to the stub. Bytes and requests are counted by
the stub (server side). Wall time is per part: module imports (paid once per
Lambda container) are done before the clock starts, in every variant, and
reported apart (``import s``; ``cold x`` is the ratio with imports included).
Figures and ratios are printed and saved as JSON.

    .venv/bin/python bench/ingest_bench.py            # 300-instance part only
    .venv/bin/python bench/ingest_bench.py --big      # plus the 3,000-instance part (~1.6 GB on disk)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BUCKET = "bench"


# ----------------------------------------------------------------------------- generation
def generate_part(path: Path, count: int, header_kb: int) -> None:
    """A STORED part as the gateway writes it (members + manifest.json), one instance in memory at a time."""
    import numpy as np
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    template = dcmread(get_testdata_file("CT_small.dcm"))
    template.Rows = template.Columns = 512
    template.BitsAllocated, template.BitsStored, template.HighBit = 16, 12, 11
    template.PixelRepresentation = 0
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16).tobytes()
    template.PixelData = pixels
    template["PixelData"].VR = "OW"
    # A vendor private block before the pixel data, as real CT headers carry (Siemens CSA: several KB).
    template.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    template.add_new(0x00291010, "OB", bytes(header_kb * 1024))
    study, series = generate_uid(), generate_uid()
    template.StudyInstanceUID, template.SeriesInstanceUID = study, series
    tmp = path.with_suffix(".tmp")
    records = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for number in range(1, count + 1):
            template.SOPInstanceUID = generate_uid()
            template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
            template.InstanceNumber = number
            template.SliceLocation = float(number)
            buffer = io.BytesIO()
            template.save_as(buffer, enforce_file_format=True)
            data = buffer.getvalue()
            name = f"{template.SOPInstanceUID}.dcm"
            zf.writestr(name, data)
            records.append({"member": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        manifest = {
            "format": "dicom-series-part/1",
            "gateway_id": "bench",
            "study_instance_uid": study,
            "series_instance_uid": series,
            "instance_count": count,
            "instances": records,
        }
        zf.writestr("manifest.json", json.dumps(manifest), compress_type=zipfile.ZIP_DEFLATED)
    tmp.rename(path)
    (path.parent / (path.name + ".uids")).write_text(f"{study}\n{series}\n")


def ensure_part(root: Path, count: int, header_kb: int) -> str:
    """Generate (once) and return the object key of a ``count``-instance part."""
    cache = root / "cache" / f"ct-{count}-h{header_kb}.zip"
    cache.parent.mkdir(parents=True, exist_ok=True)
    if not cache.exists():
        started = time.monotonic()
        generate_part(cache, count, header_kb)
        print(
            f"generated {cache} ({cache.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - started:.0f} s"
        )
    study, series = (root / "cache" / (cache.name + ".uids")).read_text().split()
    key = f"incoming/{study}/{series}/bench-{count}.zip"
    target = root / BUCKET / key
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(cache, target)
    return key


# ----------------------------------------------------------------------------- children
class NullDynamo:
    """Stands in for DynamoDB: every write succeeds, every read finds nothing."""

    calls = 0

    def __getattr__(self, name: str) -> Any:
        def call(**_: Any) -> dict[str, Any]:
            NullDynamo.calls += 1
            return {}

        return call


def s3_client(endpoint: str, pool: int) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",  # noqa: S106
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=pool,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "max_attempts": 3},
        ),
    )


def child(args: argparse.Namespace) -> None:
    import logging

    logging.disable(logging.CRITICAL)
    s3 = s3_client(args.endpoint, max(10, args.concurrency * 2))
    # Imports are paid once per Lambda container (init), not per part: timed apart, in both variants.
    imported = time.monotonic()
    from ingest.extract import extract
    from pydicom import dcmread

    if args.variant in ("ingest", "ingest-boto"):
        from ingest.process import ingest_object
    import_s = time.monotonic() - imported
    started = time.monotonic()
    if args.variant in ("ingest", "ingest-boto"):
        report = ingest_object(
            s3,
            NullDynamo(),  # type: ignore[arg-type]
            "bench",
            BUCKET,
            args.key,
            concurrency=args.concurrency,
            presigned_reads=args.variant == "ingest",
        )
        result = {"indexed": len(report.indexed), "rejected": len(report.rejected), "status": report.status}
    else:
        body = s3.get_object(Bucket=BUCKET, Key=args.key)["Body"].read()
        indexed = 0
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".dcm"):
                    ds = dcmread(io.BytesIO(zf.read(info)))
                    extract(ds)
                    indexed += 1
        result = {"indexed": indexed, "rejected": 0, "status": "indexed"}
    result["wall_s"] = round(time.monotonic() - started, 3)
    result["import_s"] = round(import_s, 3)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    print(json.dumps(result))


# ----------------------------------------------------------------------------- driver
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stats(endpoint: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{endpoint}/__stats") as response:  # noqa: S310 - loopback stub
        return dict(json.loads(response.read()))


def run_child(endpoint: str, key: str, variant: str, concurrency: int, repeat: int = 1) -> dict[str, Any]:
    """Run a variant ``repeat`` times; keep the run with the median wall time (the machine is shared)."""
    runs = sorted(
        (run_once(endpoint, key, variant, concurrency) for _ in range(repeat)), key=lambda r: r["wall_s"]
    )
    result = runs[len(runs) // 2]
    result["wall_all_s"] = [r["wall_s"] for r in runs]
    return result


def run_once(endpoint: str, key: str, variant: str, concurrency: int) -> dict[str, Any]:
    stats(endpoint)  # reset
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "child",
            "--endpoint",
            endpoint,
            "--key",
            key,
            "--variant",
            variant,
            "--concurrency",
            str(concurrency),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    served = stats(endpoint)
    result["requests"] = served["get"] + served["head"]
    result["bytes_fetched"] = served["bytes_out"]
    result["puts"] = served["put"]
    return result


def main(argv: list[str] | None = None) -> None:  # noqa: PLR0915 - a script driver, read top to bottom
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    c = sub.add_parser("child")
    c.add_argument("--endpoint", required=True)
    c.add_argument("--key", required=True)
    c.add_argument("--variant", choices=["ingest", "ingest-boto", "baseline"], required=True)
    c.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ingest-bench"))
    parser.add_argument("--big", action="store_true", help="also the 3,000-instance (~1.6 GB) part")
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--big-instances", type=int, default=3000)
    parser.add_argument("--header-kb", type=int, default=8, help="private block in each header, KB")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32", help="read concurrencies to sweep")
    parser.add_argument("--big-concurrency", default="8,16,32", help="read concurrencies for the big part")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant on the small part (median)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--mbps", type=float, default=80.0, help="stub bandwidth per connection, MB/s")
    args = parser.parse_args(argv)
    if args.command == "child":
        child(args)
        return

    root = args.workdir
    (root / BUCKET).mkdir(parents=True, exist_ok=True)
    parts = [(args.instances, [int(x) for x in args.concurrency.split(",")])]
    if args.big:
        parts.append((args.big_instances, [int(x) for x in args.big_concurrency.split(",")]))
    keys = {count: ensure_part(root, count, args.header_kb) for count, _ in parts}
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    stub = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "s3_stub.py"),
            "--root",
            str(root),
            "--port",
            str(port),
            "--latency-ms",
            str(args.latency_ms),
            "--mbps",
            str(args.mbps),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stub.stdout is not None
        stub.stdout.readline()  # ready
        results: dict[str, Any] = {
            "latency_ms": args.latency_ms,
            "mbps_per_connection": args.mbps,
            "parts": {},
        }
        for count, sweep in parts:
            key = keys[count]
            size = (root / BUCKET / key).stat().st_size
            print(
                f"\n== {count} instances, {size / 1e6:.1f} MB object; "
                f"S3 stub {args.latency_ms:.0f} ms/request, {args.mbps:.0f} MB/s per connection"
            )
            repeat = args.repeat if count == args.instances else 1
            rows = [("baseline", 1, run_child(endpoint, key, "baseline", 1, repeat))]
            for n in sweep:
                rows.append(("ingest", n, run_child(endpoint, key, "ingest", n, repeat)))
            # The same reader through one botocore call per ranged GET, at the highest concurrency.
            rows.append(
                ("ingest-boto", sweep[-1], run_child(endpoint, key, "ingest-boto", sweep[-1], repeat))
            )
            base = rows[0][2]
            print(
                f"{'variant':<12}{'conc':>5}{'indexed':>9}{'requests':>10}{'MB fetched':>12}{'% object':>10}"
                f"{'peak RSS MB':>13}{'CPU s':>8}{'wall s':>9}{'speed-up':>10}{'import s':>10}{'cold x':>11}"
            )
            for variant, n, r in rows:
                print(
                    f"{variant:<12}{n:>5}{r['indexed']:>9}{r['requests']:>10}"
                    f"{r['bytes_fetched'] / 1e6:>12.2f}{100 * r['bytes_fetched'] / size:>9.2f}%"
                    f"{r['peak_rss_mb']:>13.0f}{r['cpu_s']:>8.2f}{r['wall_s']:>9.2f}"
                    f"{base['wall_s'] / r['wall_s']:>9.1f}x{r['import_s']:>10.2f}"
                    f"{(base['wall_s'] + base['import_s']) / (r['wall_s'] + r['import_s']):>11.1f}x"
                )
            results["parts"][str(count)] = {
                "object_bytes": size,
                "rows": [{"variant": v, "concurrency": n, **r} for v, n, r in rows],
            }
        out = root / "results.json"
        out.write_text(json.dumps(results, indent=1))
        print(f"\nsaved {out}")
    finally:
        stub.terminate()
        stub.wait()


if __name__ == "__main__":
    main()

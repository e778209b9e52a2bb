"""A tiny run of bench/ingest_bench.py (stub S3, child processes), so that the benchmark does not rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ingest_bench.py"


def test_ingest_benchmark_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--workdir",
            str(tmp_path),
            "--instances",
            "4",
            "--concurrency",
            "2",
            "--repeat",
            "1",
            "--latency-ms",
            "1",
            "--header-kb",
            "1",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {r["variant"]: r for r in results["parts"]["4"]["rows"]}
    assert set(rows) == {"baseline", "ingest", "ingest-boto"}
    assert rows["ingest"]["indexed"] == rows["baseline"]["indexed"] == 4
    # The header reader fetches a small share of the object; the baseline all of it.
    assert rows["ingest"]["bytes_fetched"] < results["parts"]["4"]["object_bytes"] / 2
    assert rows["baseline"]["bytes_fetched"] == results["parts"]["4"]["object_bytes"]
    assert "speed-up" in out.stdout

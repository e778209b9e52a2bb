"""Cold start: the query function imports no pydicom/numpy/PIL; import times of both functions reported."""

from __future__ import annotations

import os
import re
import subprocess
import sys

HEAVY = ("pydicom", "numpy", "PIL")


def import_profile(module: str) -> tuple[float, set[str]]:
    """(cumulative import time of ``module`` in ms, top-level packages imported) in a fresh interpreter."""
    env = {**os.environ, "TABLE_NAME": "t", "BUCKET_NAME": "b", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    total = 0.0
    packages = set()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            packages.add(match.group(3).split(".")[0])
            if match.group(3) == module:
                total = int(match.group(1)) / 1000
    return total, packages


def test_query_function_imports_nothing_only_ingest_needs() -> None:
    query_ms, query_packages = import_profile("query.handler")
    ingest_ms, ingest_packages = import_profile("ingest.handler")
    print(f"\nimport time: query.handler {query_ms:.0f} ms, ingest.handler {ingest_ms:.0f} ms")
    assert not query_packages & set(HEAVY), query_packages & set(HEAVY)
    assert "pydicom" in ingest_packages
    assert query_ms > 0

"""Cold start: the query function imports no pydicom/numpy/PIL/boto3 (timings: bench/query_cold_start.py).

The X-Ray SDK outside a traced Lambda runtime: tests/unit/test_tracing.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

# boto3's import loads s3transfer and its resource layer: the query function's clients
# come from botocore (query.dependencies).
HEAVY = {"pydicom", "numpy", "PIL", "boto3", "s3transfer"}


def imported_packages(module: str) -> set[str]:
    """Top-level packages a fresh interpreter imports for ``import module``."""
    env = {**os.environ, "TABLE_NAME": "t", "BUCKET_NAME": "b", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = (re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", line) for line in done.stderr.splitlines())
    return {match.group(1).split(".")[0] for match in found if match}


def test_query_function_imports_nothing_only_ingest_needs() -> None:
    assert not imported_packages("query.handler") & HEAVY
    # The check can fail: ingest does import pydicom and boto3.
    assert {"pydicom", "boto3"} <= imported_packages("ingest.handler")

"""Cold start of the Lambda functions: import time of each handler in fresh interpreters.

    .venv/bin/python bench/query_cold_start.py [--runs 11]

Target: ``query.handler`` imports in under 300 ms. Each figure is the median of
``--runs`` fresh interpreters (``python -X importtime``, cumulative microseconds of
the module), printed next to its references measured in the same run:

- ``aws_lambda_powertools.event_handler``: the resolver alone (the floor of any
  Powertools-based query function);
- ``aws_xray_sdk.core``: what Powertools' ``Tracer`` imports when it is built; a lazy
  tracer (built on the first invocation) would move this share out of the init phase
  and into the first request, so the figure is printed as what such a change could save;
- ``ingest.handler`` for comparison (it needs pydicom).

It also checks that the query function does not import pydicom, numpy or Pillow.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

TARGET_MS = 300.0
HEAVY = ("pydicom", "numpy", "PIL")


def import_ms(module: str) -> tuple[float, set[str]]:
    """(cumulative import time of ``module`` in ms, top-level packages imported) in a fresh interpreter."""
    env = {**os.environ, "TABLE_NAME": "t", "BUCKET_NAME": "b", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    total, packages = 0.0, set()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            packages.add(match.group(3).split(".")[0])
            if match.group(3) == module:
                total = int(match.group(1)) / 1000
    return total, packages


def median_ms(module: str, runs: int) -> float:
    return statistics.median(import_ms(module)[0] for _ in range(runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    _, packages = import_ms("query.handler")
    heavy = sorted(packages & set(HEAVY))
    query = median_ms("query.handler", args.runs)
    resolver = median_ms("aws_lambda_powertools.event_handler", args.runs)
    xray = median_ms("aws_xray_sdk.core", args.runs)
    ingest = median_ms("ingest.handler", args.runs)
    print(f"query.handler              {query:7.0f} ms  target {TARGET_MS:.0f} ms: {query / TARGET_MS:.2f}x")
    print(f"  Powertools resolver alone {resolver:7.0f} ms  query / resolver: {query / resolver:.2f}x")
    print(f"  X-Ray SDK (Tracer) share  {xray:7.0f} ms  without it: ~{max(query - xray, 0):.0f} ms")
    print(f"ingest.handler             {ingest:7.0f} ms  ingest / query: {ingest / query:.2f}x")
    print(f"heavy packages imported by query.handler: {heavy or 'none'}")
    return 1 if heavy else 0


if __name__ == "__main__":
    sys.exit(main())

"""Cold start of the Lambda functions: import time of each handler in fresh interpreters.

    .venv/bin/python bench/query_cold_start.py [--runs 11]

Target: ``query.handler`` imports in under 300 ms. Each figure is the median of
``--runs`` fresh interpreters: the module's cumulative ``python -X importtime`` time
(wall, ms) and the interpreter's CPU time minus that of an interpreter importing
nothing (CPU ms, steadier than wall time on a shared machine). Rows, all in this run:

- ``query.handler``, tracing inactive (tests, the local stand-in, ``sam local``, or
  ``POWERTOOLS_TRACE_DISABLED``): ``common.observability`` gives Powertools' ``Tracer`` a
  provider that records nothing, so the X-Ray SDK is not imported. Against the target.
- ``query.handler`` with the X-Ray SDK imported first: what every import cost before
  the tracer was chosen by environment (Powertools' ``Tracer`` imports
  ``aws_xray_sdk.core`` even when disabled; its recorder builds a botocore session and
  an X-Ray client at import). The reference for the ratio.
- ``query.handler`` as deployed (``LAMBDA_TASK_ROOT`` set, ``Tracing: Active``): the
  X-Ray SDK plus the botocore patch. What a traced cold start still pays.
- the Powertools resolver alone (the floor of any Powertools-based query function),
  and ``ingest.handler`` (tracing inactive; it needs pydicom).

It also checks that the query function does not import pydicom, numpy, Pillow or boto3
(its clients come from botocore, which boto3 wraps: boto3's import adds s3transfer and
its resource layer, about 30 ms of CPU for methods the function never calls).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
from dataclasses import dataclass

TARGET_MS = 300.0
HEAVY = ("pydicom", "numpy", "PIL", "boto3", "s3transfer")
BASE_ENV = {"TABLE_NAME": "t", "BUCKET_NAME": "b", "AWS_DEFAULT_REGION": "us-east-1"}
INACTIVE = {"POWERTOOLS_TRACE_DISABLED": "", "LAMBDA_TASK_ROOT": "", "AWS_SAM_LOCAL": ""}
DEPLOYED = {**INACTIVE, "LAMBDA_TASK_ROOT": "/var/task"}
AFTER = "query.handler, tracing inactive"
BEFORE = "query.handler + X-Ray SDK (before)"


@dataclass(frozen=True)
class Sample:
    wall_ms: float  # cumulative importtime of the named modules
    cpu_ms: float  # user + system CPU of the whole interpreter
    packages: frozenset[str]  # top-level packages and full module names


def _child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sample(modules: tuple[str, ...], env: dict[str, str]) -> Sample:
    """Import ``modules`` (in order) in a fresh interpreter: import time, CPU time, modules loaded."""
    full_env = {k: v for k, v in {**os.environ, **BASE_ENV, **env}.items() if v}
    cpu_before = _child_cpu_s()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {', '.join(modules)}" if modules else "pass"],
        env=full_env,
        capture_output=True,
        text=True,
        check=True,
    )
    cpu_ms = (_child_cpu_s() - cpu_before) * 1000
    roots = {m.split(".")[0] for m in modules}
    wall_us, packages = 0, set()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            name = match.group(3)
            packages.update((name.split(".")[0], name))
            # Top-level lines of the requested packages: each module once, with everything it imported.
            if len(match.group(2)) == 1 and name.split(".")[0] in roots:
                wall_us += int(match.group(1))
    return Sample(wall_us / 1000, cpu_ms, frozenset(packages))


@dataclass(frozen=True)
class Figure:
    wall_ms: float
    cpu_ms: float


def measure(modules: tuple[str, ...], env: dict[str, str], runs: int, empty_cpu_ms: float) -> Figure:
    samples = [sample(modules, env) for _ in range(runs)]
    return Figure(
        statistics.median(s.wall_ms for s in samples),
        statistics.median(s.cpu_ms for s in samples) - empty_cpu_ms,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores), median of {args.runs}")
    loaded = sample(("query.handler",), INACTIVE).packages
    heavy = sorted(loaded & set(HEAVY))
    xray_when_inactive = "aws_xray_sdk.core" in loaded
    empty = statistics.median(sample((), INACTIVE).cpu_ms for _ in range(args.runs))
    cases: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
        AFTER: (("query.handler",), INACTIVE),
        BEFORE: (("aws_xray_sdk.core", "query.handler"), INACTIVE),
        "query.handler as deployed (traced)": (("query.handler",), DEPLOYED),
        "Powertools resolver alone": (("aws_lambda_powertools.event_handler",), INACTIVE),
        "ingest.handler, tracing inactive": (("ingest.handler",), INACTIVE),
    }
    rows = {name: measure(modules, env, args.runs, empty) for name, (modules, env) in cases.items()}
    after = rows[AFTER]
    print(f"{'import':36} {'wall ms':>8} {'CPU ms':>8}  against")
    for name, fig in rows.items():
        if name == AFTER:
            wall, cpu, what = fig.wall_ms / TARGET_MS, fig.cpu_ms / TARGET_MS, "of the target"
        elif name == BEFORE:
            wall, cpu, what = after.wall_ms / fig.wall_ms, after.cpu_ms / fig.cpu_ms, "after / before"
        else:
            wall, cpu, what = fig.wall_ms / after.wall_ms, fig.cpu_ms / after.cpu_ms, "of the first row"
        note = f"{wall:.2f}x wall, {cpu:.2f}x CPU {what}"
        print(f"{name:36} {fig.wall_ms:8.0f} {fig.cpu_ms:8.0f}  {note}")
    print(f"heavy packages imported by query.handler: {heavy or 'none'}")
    print(f"X-Ray SDK imported with tracing inactive: {'yes' if xray_when_inactive else 'no'}")
    return 1 if heavy or xray_when_inactive else 0


if __name__ == "__main__":
    sys.exit(main())

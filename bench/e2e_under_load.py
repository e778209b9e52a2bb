"""Green under contention: run the e2e tier N times while two busy loops keep both cores busy.

    .venv/bin/python bench/e2e_under_load.py --runs 10 [pytest args, e.g. -k gateway]

Starts ``python -c 'while True: pass'`` twice (one per core of a 2-core CI machine), runs
``pytest tests/e2e -q`` ``--runs`` times, stops the two hogs by their PIDs and prints, per
run, the pytest summary line and, at the end, ``passed runs: X/N``. Exit status 1 unless
every run passed. A failing run's ``test-output/`` (stack, gateway and browser logs) and its
pytest output are kept in ``test-output-runs/run-N/``, since the next run overwrites them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"
KEPT = ROOT / "test-output-runs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--hogs", type=int, default=2)
    args, pytest_args = parser.parse_known_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    passed = 0
    try:
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "tests/e2e", "-q", "-p", "no:cacheprovider", *pytest_args],
                capture_output=True,
                text=True,
                check=False,
            )
            lines = done.stdout.strip().splitlines()
            summary = lines[-1] if lines else done.stderr[-300:]
            passed += done.returncode == 0
            print(
                f"run {run}: exit {done.returncode}, {time.monotonic() - started:.0f} s: {summary}",
                flush=True,
            )
            if done.returncode != 0:
                failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
                print("\n".join(failures[:20]), flush=True)
                kept = KEPT / f"run-{run}"
                shutil.rmtree(kept, ignore_errors=True)
                if OUTPUT.is_dir():
                    shutil.copytree(OUTPUT, kept)
                kept.mkdir(parents=True, exist_ok=True)
                (kept / "pytest-output.txt").write_text(done.stdout + done.stderr)
                print(f"kept its logs in {kept.relative_to(ROOT)}/", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(f"passed runs: {passed}/{args.runs} (with {len(hogs)} CPU hogs)")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())

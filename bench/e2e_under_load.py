"""Green under contention: run the e2e tier N times while two busy loops keep both cores busy.

    .venv/bin/python bench/e2e_under_load.py --runs 10 [pytest args, e.g. -k gateway]

Starts ``python -c 'while True: pass'`` twice (one per core of a 2-core CI machine), runs
``pytest tests/e2e -q`` ``--runs`` times, stops the two hogs by their PIDs and prints, per
run, the pytest summary line and, at the end, ``passed runs: X/N``. Exit status 1 unless
every run passed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


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
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(f"passed runs: {passed}/{args.runs} (with {len(hogs)} CPU hogs)")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())

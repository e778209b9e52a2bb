"""Peak memory of each decode bomb through the bounded paths, next to stock pydicom on the same bytes.

    .venv/bin/python bench/decode_bombs.py            # from the repository root

Each case runs in its own subprocess: it builds the bomb (tests/decode_bombs.py), resets the
kernel's high-water mark (/proc/self/clear_refs), notes VmRSS as the baseline, runs the path,
and reports VmHWM - baseline. "bounded" is what the API does now (common.decode_limits via
STOW's check and query.rendering); "stock" is pydicom without the limits (what the API did
before), the reference run of the same command. Target: bounded under 256 MB above baseline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

CHILD = r"""
import io, json, sys, warnings
warnings.simplefilter("ignore")
import numpy as np, pydicom
from common import decode_limits
from query import rendering
from query.routes import stow
from tests import decode_bombs

case, mode = sys.argv[1], sys.argv[2]
build = {
    "deflate 512 MB": lambda: decode_bombs.deflate_bomb(512 * 1024 * 1024),
    "1,000,000 elements": lambda: decode_bombs.element_bomb(1_000_000),
    "1,000,000 items": lambda: decode_bombs.item_bomb(1_000_000),
    "RLE 8000 x 8000": lambda: decode_bombs.rle_bomb(8000, 8000),
    "native 4096 x 4096": lambda: decode_bombs.large_native(4096, 4096),
}[case]
data = build()

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
base = status("VmRSS")
outcome = "accepted"
try:
    if mode == "stock":
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if case.startswith(("RLE", "native")):
            np.asarray(ds.pixel_array, dtype=np.float64)
    elif case.startswith(("RLE", "native")):
        rendering.render(data)
    else:
        refused = stow.over_limits(data)
        if refused is None:
            stow._read(data)
        else:
            outcome = "refused: " + refused
except decode_limits.LimitExceeded as exc:
    outcome = "refused: " + str(exc)
except Exception as exc:
    outcome = "error: " + type(exc).__name__
print(json.dumps({"peak": status("VmHWM") - base, "bytes": len(data), "outcome": outcome}))
"""

# The last case is no bomb: a 32 MB frame within the limits, rendered, to show what is allowed costs.
CASES = ("deflate 512 MB", "1,000,000 elements", "1,000,000 items", "RLE 8000 x 8000", "native 4096 x 4096")


def run(case: str, mode: str) -> dict[str, object]:
    env = {"TABLE_NAME": "bench", "BUCKET_NAME": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, case, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**env, "PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"},
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"decode bombs, {now}; peak RSS above the baseline (MB)")
    print(f"{'case':<20} {'on wire':>9} {'bounded':>8} {'stock':>8} {'ratio':>6}  bounded outcome")
    worst = 0.0
    for case in CASES:
        bounded = run(case, "bounded")
        stock = run(case, "stock")
        b, s = int(str(bounded["peak"])) / MIB, int(str(stock["peak"])) / MIB
        worst = max(worst, b)
        wire = int(str(bounded["bytes"])) / MIB
        ratio = b / s if s else float("nan")
        print(f"{case:<20} {wire:>7.2f}MB {b:>8.1f} {s:>8.1f} {ratio:>6.3f}  {bounded['outcome']}")
    print(f"worst bounded peak: {worst:.1f} MB (target < 256 MB): {'ok' if worst < 256 else 'OVER'}")
    return 0 if worst < 256 else 1


if __name__ == "__main__":
    raise SystemExit(main())

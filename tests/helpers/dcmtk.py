"""dcmtk command-line peers (Debian dcmtk) for end-to-end tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import require_tool


def store_with_dcmtk(port: int, files: list[Path], *flags: str) -> None:
    """C-STORE with dcmtk storescu (each file in its own syntax): the data every test queries."""
    done = subprocess.run(
        [dcmtk("storescu"), *flags, "-aec", "EDGE", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr


def dcmtk(tool: str) -> str:
    path = f"/usr/bin/{tool}"  # pynetdicom's console scripts of the same name shadow dcmtk's
    require_tool(shutil.which(path) is not None, f"dcmtk {tool}")
    return path

"""``python -m local_cloud.moto_launcher -H HOST -p PORT``: moto's server with the stand-in's patch.

The same as ``python -m moto.server`` (same arguments), after
``local_cloud.moto_patches.apply()``. It runs in its own process group (the
terminal's Ctrl-C does not reach it, so moto serves until the stand-in has saved
its data) and ends when its parent's end of stdin closes. Its own status lines start with
``local_cloud.`` so that ``MotoServer`` can tell them from moto's request log.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from local_cloud import moto_patches

STATUS_PREFIX = "local_cloud.moto_patches"


def _exit_with_parent() -> None:
    """End when the parent's end of stdin closes: a killed stand-in leaves no moto holding the port."""

    def watch() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv: list[str] | None = None) -> None:
    """Apply the moto patches, report their status on stdout, then run moto's server with ``argv``."""
    _exit_with_parent()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    patch_log = logging.getLogger(moto_patches.__name__)
    patch_log.addHandler(handler)
    patch_log.setLevel(logging.INFO)
    patch_log.propagate = False
    status = moto_patches.apply()
    print(f"{STATUS_PREFIX} STATUS {status}", flush=True)

    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()

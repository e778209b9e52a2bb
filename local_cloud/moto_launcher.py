"""``python -m local_cloud.moto_launcher -H HOST -p PORT``: moto's server with the stand-in's patch.

The same as ``python -m moto.server`` (same arguments), after
``local_cloud.moto_patches.apply()``. Its own status lines start with
``local_cloud.`` so that ``MotoServer`` can tell them from moto's request log.
"""

from __future__ import annotations

import logging
import sys

from local_cloud import moto_patches

STATUS_PREFIX = "local_cloud.moto_patches"


def main(argv: list[str] | None = None) -> None:
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

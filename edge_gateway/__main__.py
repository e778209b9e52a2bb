"""Run the ``edge-gateway`` command: ``python -m edge_gateway``."""

import sys

from edge_gateway.cli import main

sys.exit(main())

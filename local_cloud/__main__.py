"""Run the local stand-in of the cloud side: ``python -m local_cloud``."""

import sys

from local_cloud.cli import main

sys.exit(main())

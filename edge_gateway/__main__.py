import sys

from edge_gateway.cli import main

sys.exit(main())

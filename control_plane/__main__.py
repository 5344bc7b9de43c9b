"""Run the control plane's command line: ``python -m control_plane``."""

import sys

from control_plane.cli import main

sys.exit(main())

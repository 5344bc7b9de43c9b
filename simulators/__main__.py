"""Run the edgepm-simulate command as ``python -m simulators``."""

import sys

from simulators.cli import main

sys.exit(main())

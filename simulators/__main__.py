"""Run the simulators' command line: ``python -m simulators``."""

import sys

from simulators.cli import main

sys.exit(main())

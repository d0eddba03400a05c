"""`python -m flet_resilient.loadtest`: the load-test command line."""

import sys

from flet_resilient.loadtest.cli import main

sys.exit(main())

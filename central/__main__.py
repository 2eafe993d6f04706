"""`python -m central`."""

import sys

from central import cli

sys.exit(cli.main())

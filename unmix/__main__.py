"""`python -m unmix` is the `unmix` command."""
import sys

from unmix.cli import main

sys.exit(main())

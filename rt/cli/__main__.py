"""`python -m bandlift.rt.cli`: the same entry point as the `bandlift` script."""
import sys

from bandlift.rt.cli import main

sys.exit(main())

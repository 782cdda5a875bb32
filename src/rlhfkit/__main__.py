"""`python -m rlhfkit` (also what `accelerate launch -m rlhfkit ...` runs)."""

import sys

from rlhfkit.cli import main

sys.exit(main())

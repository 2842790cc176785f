"""``python -m verify_draw <entrants.json | - | URL> [--commitment H] [--list-hash H] [--seed S] [--entry-id E]``."""

import sys

from verify_draw import main

sys.exit(main())

"""``python -m app.cli``: the same as ``unet-segment``."""

import sys

from app.cli import main

sys.exit(main())

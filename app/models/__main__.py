"""``python -m app.models check MODEL.onnx [--sidecar]`` (app/models/check.py)."""

from __future__ import annotations

import sys

from app.models.check import main

sys.exit(main())

"""The benchmarks' one way to hand over results: JSON on stdout, and into ``--json`` when given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def report(results: Any, path: Path | None) -> None:
    text = json.dumps(results, indent=1)
    print(text)
    if path is not None:
        path.write_text(text)

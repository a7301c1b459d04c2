"""Print the project's requirements for the given extras, one per line (for image builds).

    python deploy/requirements.py cpu,service,dicom > requirements.txt

The images install the dependencies only, not the project, so that the layer
holding them depends on pyproject.toml alone; the source is copied afterwards.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project["optional-dependencies"]
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(f"unknown extras {unknown}; pyproject.toml has {sorted(optional)}")
    return [*project["dependencies"], *(req for extra in extras for req in optional[extra])]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    here = Path("pyproject.toml")
    print("\n".join(requirements(here, sys.argv[1].split(","))))

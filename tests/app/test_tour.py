"""The README's five-command tour, run as a newcomer runs it: its own curl lines against a
live server (uvicorn on 127.0.0.1) serving the shipped model, on the shipped example image."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, Server, start_server, stop_server
from tests.samples import cells

# The section's one ```bash block: the commands, one a line.
TOUR = re.compile(r"^## A five-command tour\n.*?^```bash\n(.*?)^```", re.S | re.M)
README_URL = "http://localhost:8000"
# The first of the README's three command-line examples, the one on a shipped file.
CLI = "    .venv/bin/unet-segment examples/cells.png --out results/\n"


def tour() -> list[str]:
    found = TOUR.search((REPO / "README.md").read_text(encoding="utf-8"))
    assert found, "README.md has no '## A five-command tour' with a ```bash block"
    return [line for line in found[1].splitlines() if line.strip()]


def test_the_example_image_is_what_the_generator_makes() -> None:
    shipped = np.asarray(Image.open(REPO / "examples" / "cells.png"))
    np.testing.assert_array_equal(shipped, cells())


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("tour") / "uvicorn.log"
    running = start_server({"UNET_MODEL_PATH": str(REPO / "model" / "unet.onnx")}, log)
    yield running
    stop_server(running)


def test_the_readme_tour_runs(shipped: Server, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed: the README's tour needs it")
    commands = tour()
    assert len(commands) == 5, commands
    (tmp_path / "examples").symlink_to(REPO / "examples")
    printed = []
    for line in commands:
        args = shlex.split(line.replace(README_URL, shipped.url))
        assert args[0] == "curl", line
        run = subprocess.run(
            ["curl", "--fail-with-body", "--silent", "--show-error", *args[1:]],
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, (line, run.stdout[:500], run.stderr)
        printed.append(run.stdout)

    health, model = json.loads(printed[0]), json.loads(printed[4])
    assert health["status"] == "ready"
    assert health["model"]["name"] == model["name"] == "unet-isbi2012-membranes"
    assert model["card"] == "embedded"

    mask = np.asarray(Image.open(tmp_path / "mask.png"))
    assert mask.shape == (384, 384)
    assert set(np.unique(mask)) <= {0, 1}
    assert 0.05 < mask.mean() < 0.5  # membranes: a part of the picture, not none, not all

    with Image.open(tmp_path / "overlay.png") as overlay:
        assert (overlay.size, overlay.mode) == ((384, 384), "RGB")

    objects = json.loads((tmp_path / "objects.json").read_text())
    assert (objects["height"], objects["width"]) == (384, 384)
    # 64 cells drawn (the organelles split a few): the watershed finds each about once.
    assert 40 <= len(objects["objects"]) <= 120
    assert {"id", "label", "area", "bbox", "centroid", "score", "rle"} <= set(objects["objects"][0])

    # The README's command line on the same image writes the same mask, bit for bit.
    assert CLI in (REPO / "README.md").read_text(encoding="utf-8")
    command = shlex.split(CLI)
    script = Path(sys.executable).parent / Path(command[0]).name
    run = subprocess.run(
        [str(script), *command[1:]], cwd=tmp_path, capture_output=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    written = np.asarray(Image.open(tmp_path / "results" / "cells.png"))
    np.testing.assert_array_equal(written, mask)

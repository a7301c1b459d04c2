"""The peers are dcmtk's programs, even where pynetdicom's programs of the same names
come first on PATH (the venv activated)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import dcmtk
from tests.deploy.pacs import require
from tests.gateway.peers import TOOLS


def test_dcmtk_is_found_behind_pynetdicoms_programs_of_the_same_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require([name for name in ("storescu", "storescp", "echoscu") if TOOLS[name] is None])
    venv = Path(sys.executable).parent  # pynetdicom's console scripts are installed here
    monkeypatch.setenv("PATH", f"{venv}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
    for name in ("storescu", "storescp", "echoscu"):
        shadow = shutil.which(name)
        assert shadow == str(venv / name)  # what a plain PATH look-up would run
        assert "pynetdicom" in Path(shadow).read_text()
        found = dcmtk(name)
        assert found == TOOLS[name]
        assert found != shadow


def test_no_dcmtk_on_path_is_none_not_an_impostor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    impostor = tmp_path / "storescu"
    impostor.write_text("#!/bin/sh\necho 'usage: storescu [options] addr port path'\n")
    impostor.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("storescu") == str(impostor)
    assert dcmtk("storescu") is None

"""The answers of /segment stay what they were before the core was restructured (byte for byte).

The goldens (tests/app/golden/) were recorded by ``python -m tests.app.golden``
on the code before issue 10; see that module for what is compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.app.golden import FOLDER, answers


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[str, object]]:
    manifest: dict[str, dict[str, object]] = json.loads((FOLDER / "manifest.json").read_text())
    return manifest


def test_every_answer_is_the_recorded_one(
    recorded: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    seen = set()
    for case, status, content_type, body in answers(tmp_path):
        seen.add(case.name)
        expected = recorded[case.name]
        assert (status, content_type) == (expected["status"], expected["content_type"]), case.name
        assert body == (FOLDER / f"{case.name}.bin").read_bytes(), case.name
    assert seen == set(recorded)

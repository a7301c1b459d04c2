"""schemathesis --checks all against the real server's /openapi.json: zero failures.

Bounded (max examples per operation), loopback only; with and without API keys,
so that the schema's security declarations are true in both configurations.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Server

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.parametrize("keys", ["", "test-key-1"], ids=["open", "api-keys"])
def test_schemathesis_finds_nothing(server_factory: Callable[..., Server], keys: str) -> None:
    server = server_factory(UNET_API_KEYS=keys)
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run"]
    command += [f"{server.url}/openapi.json", "--checks", "all", "--max-examples", "60"]
    # All but use_after_free: DELETE /jobs/{id} of a queued or running job cancels it (202)
    # and the job stays readable, "cancelled", until a second DELETE removes it (204; API.md,
    # "Jobs"). The check reads any 2XX of a DELETE as "deleted", so it fails whenever the
    # job it made was still running -- timing alone. test_jobs.py tests the 404 after a 204.
    command += ["--exclude-checks", "use_after_free"]
    command += ["--seed", "1", "--request-timeout", "30"]
    if keys:
        command += ["--header", f"Authorization: Bearer {keys}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:]
    assert "No issues found" in done.stdout, done.stdout[-4000:]

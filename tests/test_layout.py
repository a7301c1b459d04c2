"""The shape of app/ (STYLE.md 1): one concept per file, no file over 300 lines,
no function over 60; checked here so that review need not."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 60


def test_no_file_in_app_is_over_300_lines() -> None:
    long = {
        str(p.relative_to(APP)): n
        for p in APP.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not long, f"split these by concept: {long}"


def test_no_function_in_app_is_over_60_lines() -> None:
    long = []
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(APP)}:{node.name} ({lines} lines)")
    assert not long, f"split these: {long}"


def test_the_command_line_and_the_workers_load_no_web_framework() -> None:
    """What import-linter's contract promises, seen in a fresh interpreter: unet-segment, the
    jobs runner and a Dask worker's module import no fastapi, starlette or uvicorn."""
    code = (
        "import sys, app.cli, app.jobs.runner, app.pipeline.dask; "
        "loaded = {m.split('.')[0] for m in sys.modules}; "
        "print(sorted(loaded & {'fastapi', 'starlette', 'uvicorn'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=APP.parent, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

"""The manual's SLURM and LSF clusters (dask-jobqueue), built from the very code blocks of
docs/large-images.md, their job scripts checked; nothing is submitted."""

from __future__ import annotations

import re
from pathlib import Path

import dask
import dask_jobqueue  # noqa: F401 -- its config defaults, before the tests set their part
import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs" / "large-images.md"
LOOPBACK = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}


def block(name: str) -> str:
    """The python code block of the manual that starts with ``# name``."""
    found = re.findall(r"```python\n(# (\w+)\n.*?)```", DOCS.read_text(), re.S)
    return next(code for code, first in found if first == name)


@pytest.mark.parametrize(
    ("name", "directives"),
    [
        ("slurm", ["#SBATCH --cpus-per-task=8", "#SBATCH -t 04:00:00", "#SBATCH --gres=gpu:1"]),
        ("lsf", ["#BSUB -n 8", "#BSUB -W 04:00", '#BSUB -gpu "num=1"']),
    ],
)
def test_the_manuals_hpc_cluster_writes_the_job_script_it_promises(
    name: str, directives: list[str]
) -> None:
    code: dict[str, object] = {}
    with dask.config.set({f"jobqueue.{name}.scheduler-options": LOOPBACK}):
        exec(block(name), code)  # the manual's own code
        cluster = code["cluster"]
        try:
            script = cluster.job_script()  # type: ignore[attr-defined]
            address = cluster.scheduler_address  # type: ignore[attr-defined]
        finally:
            cluster.close()  # type: ignore[attr-defined]
    lines = script.splitlines()
    for directive in directives:
        assert directive in lines
    (command,) = [line for line in lines if "dask_worker" in line]
    assert f"dask_worker {address} " in command
    assert re.findall(r"--nthreads (\d+)", command) == ["1"]
    assert address.startswith("tcp://127.0.0.1:")

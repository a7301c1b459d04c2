"""The Dockerfile as data (stages, ENV, CMD, HEALTHCHECK), for tests that need no Docker.

Just enough of the Dockerfile grammar for our own file: comments, line
continuations, ``FROM x AS name``, ``ENV k=v ...`` with ``$VAR`` expansion,
``WORKDIR``, ``USER``, ``EXPOSE``, exec-form ``CMD`` and ``HEALTHCHECK ... CMD``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
# What the base images set before our ENV lines (python:3.11-slim's and nvidia/cuda's PATH).
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass
class Stage:
    name: str
    base: str
    env: dict[str, str] = field(default_factory=lambda: dict(BASE_ENV))
    workdir: str = "/"
    user: str = "root"
    expose: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck_options: dict[str, str] = field(default_factory=dict)
    healthcheck: list[str] = field(default_factory=list)
    run: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuations joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def _exec_form(args: str, what: str) -> list[str]:
    try:
        argv = json.loads(args)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} must be exec form (a JSON array), got {args!r}") from exc
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        raise ValueError(f"{what} must be a JSON array of strings, got {args!r}")
    return argv


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """Every named stage; a stage built FROM another starts from a copy of it."""
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for keyword, args in instructions(text):
        if keyword == "FROM":
            words = args.split()
            base, name = words[0], words[2] if len(words) == 3 else f"stage{len(stages)}"
            parent = stages.get(base)
            stage = Stage(name, base)
            if parent is not None:
                stage.env, stage.workdir, stage.user = dict(parent.env), parent.workdir, parent.user
            stages[name] = stage
        elif stage is None:
            continue  # ARG before the first FROM
        elif keyword == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                stage.env[key] = _expand(value, stage.env)
        elif keyword == "WORKDIR":
            stage.workdir = str(Path(stage.workdir, args))
        elif keyword == "USER":
            stage.user = args
        elif keyword == "EXPOSE":
            stage.expose += args.split()
        elif keyword == "CMD":
            stage.cmd = _exec_form(args, "CMD")
        elif keyword == "RUN":
            stage.run.append(args)
        elif keyword == "COPY":
            stage.copies.append(args)
        elif keyword == "HEALTHCHECK":
            options, _, command = args.partition("CMD ")
            stage.healthcheck_options = dict(
                option.removeprefix("--").split("=", 1) for option in options.split()
            )
            stage.healthcheck = _exec_form(command, "HEALTHCHECK CMD")
    return stages


def graceful_timeout(stage: Stage) -> int:
    """uvicorn's --timeout-graceful-shutdown in the stage's CMD, seconds."""
    option = "--timeout-graceful-shutdown"
    if option not in stage.cmd:
        raise ValueError(f"the {stage.name} CMD has no {option}: {stage.cmd}")
    return int(stage.cmd[stage.cmd.index(option) + 1])


@pytest.fixture(scope="session")
def stages() -> dict[str, Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="session")
def cpu_stage(stages: dict[str, Stage]) -> Stage:
    return stages["cpu"]

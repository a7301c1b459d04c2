"""The service started exactly as the image starts it, as a plain process (no Docker).

The command, environment and working directory are read from the Dockerfile's
``cpu`` stage, and its paths mapped onto a stand-in of the image's file system
in a temporary folder: /app (the source and the model, read-only), /tmp (the
only writable place, as the tmpfs), /opt/venv (this virtual environment). Only
``--host`` and ``--port`` are changed, so that parallel runs do not collide.
When the tests run as root, the service runs as ``nobody`` where that user can
reach the interpreter.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from conftest import ROOT, Stage, graceful_timeout
from PIL import Image

from tests.conftest import free_port
from tests.nets import UNetSpec

NOBODY = 65534
STARTUP_S = 120  # model load + warm-up on a busy CI machine
# A tiny valid U-Net, run tile by tile at its smallest tile: a 448 x 448 image
# becomes ~12,500 network runs, seconds of work -- long enough to send SIGTERM
# in the middle of it, well inside the graceful-shutdown timeout.
TINY = UNetSpec(depth=2, base=2, padding="valid")
LONG_REQUEST_SIDE = 448


def png(side: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_model(out: Path, spec: UNetSpec) -> None:
    """Written by deploy.demo_model's command line, as the Dockerfile's `model` stage does."""
    shape = ["--depth", str(spec.depth), "--base", str(spec.base), "--padding", spec.padding]
    subprocess.run(
        [sys.executable, "-m", "deploy.demo_model", "--out", str(out), *shape],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


@functools.cache
def _nobody_can_run_python() -> bool:
    probe = [sys.executable, "-c", "import uvicorn, onnxruntime"]
    try:
        subprocess.run(probe, user=NOBODY, group=NOBODY, extra_groups=[], check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def run_as() -> dict[str, Any]:
    """Popen arguments that drop root to nobody, where possible; {} when not root."""
    if os.geteuid() != 0:
        return {}
    if not _nobody_can_run_python():
        return {}  # e.g. the interpreter lives under a 0700 /root; still checked by snapshots
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []}


@dataclass
class ImageTree:
    """A stand-in for the image's file system: ``root/app``, ``root/tmp``, ``root/jobs``
    (the jobs volume), ``root/home``."""

    root: Path

    def host(self, image_path: str) -> str:
        """/app/... -> root/app/...; /tmp -> root/tmp; /opt/venv -> this venv."""
        for prefix, here in (("/opt/venv", sys.prefix), ("/app", self.root / "app")):
            if image_path == prefix or image_path.startswith(prefix + "/"):
                return str(here) + image_path[len(prefix) :]
        for writable in ("/tmp", "/jobs"):
            if image_path == writable or image_path.startswith(writable + "/"):
                return str(self.root / writable[1:]) + image_path[len(writable) :]
        return image_path

    def env(self, stage: Stage) -> dict[str, str]:
        """The stage's ENV with its paths mapped ($PATH entries one by one)."""
        env = {key: self.host(value) for key, value in stage.env.items()}
        env["PATH"] = ":".join(self.host(entry) for entry in stage.env["PATH"].split(":"))
        env["LANG"] = "C.UTF-8"
        return env

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every file and folder outside tmp/ and jobs/, with size and mtime: writes change it."""
        return {
            str(path): (path.lstat().st_size, path.lstat().st_mtime_ns)
            for path in self.root.rglob("*")
            if not path.is_relative_to(self.root / "tmp")
            and not path.is_relative_to(self.root / "jobs")
        }


def _make_read_only(path: Path) -> None:
    for item in [path, *path.rglob("*")]:
        mode = 0o555 if item.is_dir() else 0o444
        item.chmod(mode)


def assemble(stage: Stage, tree: ImageTree) -> None:
    """The stage's ``COPY`` lines from the build context, onto the stand-in tree."""
    for args in stage.copies:
        if args.startswith("--from"):
            continue  # the venv (this one) and the model (made by each test)
        *sources, dest = args.split()
        target = Path(tree.host(str(Path(stage.workdir, dest))))
        for source in sources:
            if (ROOT / source).is_dir():
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(ROOT / source, target, dirs_exist_ok=True, ignore=ignore)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target)


@pytest.fixture
def image_tree(cpu_stage: Stage) -> Iterator[ImageTree]:
    root = Path(tempfile.mkdtemp(prefix="unet-image-"))
    root.chmod(0o755)
    try:
        tree = ImageTree(root)
        assemble(cpu_stage, tree)
        (root / "app" / "model").mkdir()
        (root / "tmp").mkdir()
        (root / "tmp").chmod(0o1777)  # as the tmpfs: anyone may write
        (root / "jobs").mkdir()
        (root / "jobs").chmod(0o1777)  # as the volume, owned by the service's user
        (root / "home").mkdir()
        yield tree
    finally:
        for item in [root, *root.rglob("*")]:
            if not item.is_symlink():
                item.chmod(item.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
        shutil.rmtree(root)


def install_default_model(tree: ImageTree) -> None:
    """The image's default: model/unet.onnx (+ card) when present, else the demo model."""
    target = tree.root / "app" / "model"
    if (ROOT / "model" / "unet.onnx").exists():
        for name in ("unet.onnx", "unet.json"):
            if (ROOT / "model" / name).exists():
                shutil.copy(ROOT / "model" / name, target / name)
    else:
        make_model(target / "unet.onnx", UNetSpec(base=16))


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path
    env: dict[str, str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"exited with {self.process.returncode} at start:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"not ready within {STARTUP_S} s:\n{self.output()}")

    def stop(self, timeout: float) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"still running {timeout} s after SIGTERM:\n{self.output()}")


def start(stage: Stage, tree: ImageTree, log: Path, **overrides: str) -> Server:
    """The stage's CMD with its ENV and WORKDIR on the stand-in tree; only host/port differ."""
    argv = list(stage.cmd)
    port = free_port()
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    env = {**tree.env(stage), **overrides}
    executable = shutil.which(argv[0], path=env["PATH"])
    assert executable is not None, f"{argv[0]} not on the image's PATH {env['PATH']}"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [executable, *argv[1:]],
            cwd=tree.host(stage.workdir),
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            **run_as(),
        )
    return Server(process, f"http://127.0.0.1:{port}", port, log, env)


def healthcheck(stage: Stage, server: Server) -> int:
    """The image's HEALTHCHECK command against this server: its exit status."""
    argv = [
        arg.replace("127.0.0.1:8000/", f"127.0.0.1:{server.port}/") for arg in stage.healthcheck
    ]
    executable = shutil.which(argv[0], path=server.env["PATH"])
    assert executable is not None
    return subprocess.run(
        [executable, *argv[1:]], env=server.env, timeout=30, check=False
    ).returncode


def segment(server: Server, body: bytes, timeout: float = 60) -> httpx.Response:
    return httpx.post(
        server.url + "/segment",
        content=body,
        headers={"Content-Type": "image/png"},
        timeout=timeout,
    )


def test_image_command_serves_health_and_segment(
    cpu_stage: Stage, image_tree: ImageTree, tmp_path: Path
) -> None:
    install_default_model(image_tree)
    _make_read_only(image_tree.root / "app")
    server = start(cpu_stage, image_tree, tmp_path / "server.log")
    try:
        server.wait_ready()
        if run_as():
            assert psutil.Process(server.process.pid).uids().effective == NOBODY
        assert healthcheck(cpu_stage, server) == 0
        response = segment(server, png(200))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (200, 200)
    finally:
        code = server.stop(graceful_timeout(cpu_stage) + 15)
    assert code == 0, server.output()
    assert healthcheck(cpu_stage, server) != 0  # nothing listens any more


def test_runs_with_read_only_files_and_home_writing_only_to_tmpdir(
    cpu_stage: Stage, image_tree: ImageTree, tmp_path: Path
) -> None:
    make_model(image_tree.root / "app" / "model" / "unet.onnx", TINY)
    _make_read_only(image_tree.root / "app")
    (image_tree.root / "home").chmod(0o555)
    before = image_tree.snapshot()
    server = start(
        cpu_stage, image_tree, tmp_path / "server.log", HOME=str(image_tree.root / "home")
    )
    try:
        server.wait_ready()
        assert segment(server, png(64)).status_code == 200
    finally:
        code = server.stop(graceful_timeout(cpu_stage) + 15)
    assert code == 0, server.output()
    assert image_tree.snapshot() == before, "wrote outside TMPDIR"
    for symptom in ("Permission denied", "Read-only file system", "Failed to persist"):
        assert symptom not in server.output()


def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_ones(
    cpu_stage: Stage, image_tree: ImageTree, tmp_path: Path
) -> None:
    make_model(image_tree.root / "app" / "model" / "unet.onnx", TINY)
    _make_read_only(image_tree.root / "app")
    timeout = graceful_timeout(cpu_stage)
    server = start(
        cpu_stage, image_tree, tmp_path / "server.log", UNET_TILE_SIZE=str(TINY.min_size)
    )
    server.wait_ready()
    baseline = in_flight(server)  # the scrape may count itself

    result: dict[str, Any] = {}

    def long_request() -> None:
        try:
            result["response"] = segment(server, png(LONG_REQUEST_SIDE), timeout=timeout + 30)
        except httpx.HTTPError as exc:
            result["error"] = exc

    client = threading.Thread(target=long_request)
    client.start()
    deadline = time.monotonic() + 60
    while in_flight(server) <= baseline:
        assert client.is_alive(), f"the long request ended before SIGTERM: {result}"
        assert time.monotonic() < deadline, "the long request never arrived"
        time.sleep(0.05)
    server.process.send_signal(signal.SIGTERM)
    unfinished_at_sigterm = client.is_alive()

    refused = new_request_refused(server, deadline=time.monotonic() + timeout)
    client.join(timeout + 30)
    code = server.process.wait(timeout + 15)

    assert unfinished_at_sigterm, "make the long request longer: it ended before SIGTERM"
    assert "response" in result, f"the request in flight failed: {result}\n{server.output()}"
    assert result["response"].status_code == 200, result["response"].text
    assert refused, f"new requests were still served during shutdown:\n{server.output()}"
    assert code == 0, server.output()


def in_flight(server: Server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("unet_requests_in_flight ")]
    return float(line.split()[1])


def new_request_refused(server: Server, deadline: float) -> bool:
    """Poll with fresh connections until one is refused or answered 503.

    uvicorn notices the signal within ~0.1 s, so the first attempts may still be
    served; from then on, every new request must get 503 or no connection.
    """
    while time.monotonic() < deadline:
        try:
            response = httpx.get(server.url + "/health/ready", timeout=5)
        except httpx.TransportError:
            break
        if response.status_code == 503:
            break
        time.sleep(0.05)
    else:
        return False
    try:
        late = segment(server, png(64), timeout=10)
    except httpx.TransportError:
        return True
    return late.status_code == 503


def test_a_console_script_in_the_image_imports_the_images_code(
    cpu_stage: Stage, image_tree: ImageTree
) -> None:
    """`dask scheduler` and `dask worker` (compose's `dask` profile, deploy/kubernetes/dask.yaml)
    are console scripts in /opt/venv/bin: they find the service's code through the image's
    ENV (PYTHONPATH), since only `python -m` puts the WORKDIR on sys.path."""
    script = image_tree.root / "tmp" / "console.py"  # outside /app, as /opt/venv/bin/dask is
    script.write_text("import app.pipeline.dask\nprint(app.pipeline.dask.__file__)\n")
    result = subprocess.run(
        [sys.executable, str(script)],
        env=image_tree.env(cpu_stage),
        cwd=image_tree.host(cpu_stage.workdir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(image_tree.root / "app"), result.stdout

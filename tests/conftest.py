"""Tiny models, in-process apps (TestClient) and a real uvicorn process on loopback."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.inference import Engine
from app.main import create_app
from app.settings import Settings
from tests.nets import BINARY, RGB, SOFTMAX3, UNetSpec, default_card, save_model

REPO = Path(__file__).resolve().parents[1]
API_KEY = "test-key-1"
STARTUP_TIMEOUT_S = 60


@pytest.fixture(scope="session", autouse=True)
def _no_outer_unet_env() -> Iterator[None]:
    """Settings read UNET_* variables: the tests' own environment must not leak in."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("UNET_")}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("app-models")


def _model(model_dir: Path, name: str, spec: UNetSpec) -> Path:
    path = model_dir / f"{name}.onnx"
    if not path.exists():
        save_model(path, spec, seed=3, card=default_card(spec, name=name))
    return path


@pytest.fixture(scope="session")
def binary_model(model_dir: Path) -> Path:
    return _model(model_dir, "binary", BINARY)


@pytest.fixture(scope="session")
def softmax_model(model_dir: Path) -> Path:
    return _model(model_dir, "softmax3", SOFTMAX3)


@pytest.fixture(scope="session")
def rgb_model(model_dir: Path) -> Path:
    return _model(model_dir, "rgb", RGB)


def default_engine(model: Path) -> tuple[str, str]:
    """(provider, precision) that UNET_PROVIDERS=auto and UNET_PRECISION=auto give ``model``
    on this machine: OpenVINO (bf16 where the CPU computes it) when installed."""
    engine = Engine(model, "auto", threads=1)
    return engine.providers[0], engine.precision


def settings(model: Path, **overrides: Any) -> Settings:
    """Settings for a test app; its jobs in a folder of its own unless ``jobs_dir`` is given."""
    overrides.setdefault("jobs_dir", Path(tempfile.mkdtemp(prefix="unet-test-jobs-")))
    return Settings(model_path=model, threads=1, **overrides)


@pytest.fixture(scope="module")
def client(binary_model: Path) -> Iterator[TestClient]:
    """An open (no API key) in-process app serving the binary model."""
    with TestClient(create_app(settings(binary_model))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def softmax_client(softmax_model: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(softmax_model))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def rgb_client(rgb_model: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(rgb_model))) as test_client:
        yield test_client


# -- a real uvicorn process --------------------------------------------------------------


_GIVEN_PORTS: set[int] = set()


def dcmtk(name: str) -> str | None:
    """dcmtk's program ``name`` from PATH (None: dcmtk is not installed). pynetdicom puts
    Python programs of the same names (storescu, storescp, echoscu; other options, another
    implementation) beside the venv's python: with the venv activated they come first on
    PATH, and a peer meant to be dcmtk would silently be pynetdicom."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = shutil.which(name, path=folder)
        if path is None:
            continue
        try:
            version = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=30
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if version.startswith("$dcmtk:"):
            return path
    return None


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, below the kernel's ephemeral range and never
    given twice in a run. A port from bind(0) is an ephemeral one: between the test's
    choice and its server's bind, a client's connect() could take it as its own end (an
    Orthanc of the random-order run found its HTTP port "already in use")."""
    high = _ephemeral_low()
    rng = random.Random()
    for _ in range(10_000):
        port = rng.randrange(20_000, high)
        if port in _GIVEN_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN_PORTS.add(port)
        return port
    raise RuntimeError(f"no free port in 20000-{high - 1}")


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()

    def json_log(self, wanted: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The JSON log lines ``wanted`` picks, once there is one (a request's line is
        written just after its answer has gone: it may not be there yet), within 10 s."""
        deadline = time.monotonic() + 10
        while True:
            lines = [json.loads(line) for line in self.log_lines() if line.startswith("{")]
            found = [line for line in lines if wanted(line)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def start_server(
    env: dict[str, str], log: Path, timeout_s: float = STARTUP_TIMEOUT_S, port: int | None = None
) -> Server:
    """uvicorn app.main:app on 127.0.0.1 (``port``, else a free one), once /health/ready is 200."""
    port = port or free_port()
    if "UNET_JOBS_DIR" not in env:  # its jobs beside its log, not in the shared temp dir
        env = {**env, "UNET_JOBS_DIR": str(log.parent / f"jobs-{port}")}
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--http", "h11"]
    command += ["--host", "127.0.0.1"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop_server(server)
    raise RuntimeError(f"uvicorn not ready after {timeout_s} s:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=15)


SERVER_ENV = {
    "UNET_THREADS": "1",
    "UNET_MAX_QUEUE": "4",
    "UNET_MAX_UPLOAD_BYTES": "2000000",
    "UNET_MAX_IMAGE_PIXELS": "1000000",
    "UNET_API_KEYS": f"other-key, {API_KEY}",
    "UNET_LOG_FORMAT": "json",
}


@pytest.fixture(scope="session")
def server(binary_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The binary model behind a real uvicorn on loopback, with API keys and small limits."""
    log = tmp_path_factory.mktemp("server") / "uvicorn.log"
    running = start_server({**SERVER_ENV, "UNET_MODEL_PATH": str(binary_model)}, log)
    yield running
    stop_server(running)


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    """A real HTTP client for ``server``, sending the API key."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def cluster() -> Iterator[str]:
    """A Dask LocalCluster of 2 worker processes on 127.0.0.1: its scheduler's address."""
    distributed = pytest.importorskip("distributed", reason="the `dask` extra is not installed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        # Its HTTP server (metrics; the dashboard when bokeh is there) on a free loopback
        # port: with None, distributed still tries 0.0.0.0:8787, and another cluster on
        # this machine makes that a warning, an error here.
        dashboard_address="127.0.0.1:0",
    ) as local:
        yield local.scheduler_address

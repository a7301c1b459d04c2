"""dcmtk's programs and the gateway as processes on 127.0.0.1, for tests/gateway and
bench/gateway.py: storescu and echoscu are the modality, storescp the destination PACS,
dciodvfy the judge of a SEG and its SR."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom

from tests.conftest import REPO, dcmtk

TOOLS = {name: dcmtk(name) for name in ("storescu", "storescp", "echoscu")}
TOOLS["dciodvfy"] = shutil.which("dciodvfy")  # dicom3tools, not dcmtk
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
WAIT_S = 90


@dataclass
class Process:
    command: list[str]
    log: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, cwd=REPO, env={**os.environ, **self.env}, stdout=out, stderr=out
            )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.process = None

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


class Pacs(Process):
    """dcmtk's storescp: a destination PACS that writes each instance it receives."""

    def __init__(self, folder: Path, port: int, *options: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        command = [TOOLS["storescp"] or "", *options, "--aetitle", "PACS", "-od", str(folder)]
        command.append(str(port))
        super().__init__(command, folder.parent / f"storescp-{port}.log", {})
        self.folder, self.port = folder, port

    def received(self, sop_class: str | None = SEGMENTATION) -> list[Path]:
        """The instances stored so far of ``sop_class`` (None: all), whole ones only."""
        paths = sorted(self.folder.iterdir())
        return [p for p in paths if sop_class is None or _sop_class(p) == sop_class]


def _sop_class(path: Path) -> str | None:
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID)
    except Exception:  # still being written: not received yet
        return "?"


def gateway(
    tmp_path: Path, service_url: str, port: int, stable_s: float = 1.5, **settings: str
) -> Process:
    """The gateway as ``python -m app.gateway``, its state and log in ``tmp_path``."""
    env = {
        "UNET_SERVICE_URL": service_url,
        "UNET_DICOM_PORT": str(port),
        "UNET_DICOM_HOST": "127.0.0.1",
        "UNET_DICOM_STATE_DIR": str(tmp_path / "state"),
        "UNET_DICOM_STABLE_SECONDS": str(stable_s),
        **settings,
    }
    command = [sys.executable, "-m", "app.gateway"]
    return Process(command, tmp_path / "gateway.log", env)


def wait_listening(port: int, gateway_log: Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = subprocess.run(
            [TOOLS["echoscu"] or "", "-aet", "PROBE", "-aec", "UNET", "127.0.0.1", str(port)],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the gateway never answered C-ECHO:\n{gateway_log.text()}")


def until(condition: Callable[[], bool], what: str, seconds: float = WAIT_S) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


def storescu(
    port: int, files: list[Path], calling: str = "MODALITY", called: str = "UNET"
) -> subprocess.Popen[bytes]:
    """dcmtk's storescu sending ``files`` over one association, started (see ``sent``)."""
    command = [TOOLS["storescu"] or "", "-aet", calling, "-aec", called, "127.0.0.1", str(port)]
    return subprocess.Popen([*command, *map(str, files)], stderr=subprocess.PIPE)


def sent(sender: subprocess.Popen[bytes]) -> None:
    """storescu finished and every C-STORE succeeded."""
    _, errors = sender.communicate(timeout=60)
    assert sender.returncode == 0, errors.decode(errors="replace")


def dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run(
        [TOOLS["dciodvfy"] or "", str(path)], capture_output=True, text=True, timeout=60
    )
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def the_one_seg(pacs: Pacs, series: list[Path], sr: bool = True) -> pydicom.Dataset:
    """Exactly one SEG arrived, and (``sr``) one SR measuring it, nothing else; the SEG
    references every instance of ``series``; dciodvfy is clean on both."""
    (path,) = pacs.received()
    if sr:  # right behind its SEG, over the same association
        until(lambda: bool(pacs.received(COMPREHENSIVE_3D_SR)), "the SR at the PACS", 30)
        (report,) = pacs.received(COMPREHENSIVE_3D_SR)
        assert dciodvfy_errors(report) == []
        evidence = {
            item.ReferencedSOPInstanceUID
            for study in pydicom.dcmread(report).CurrentRequestedProcedureEvidenceSequence
            for ref in study.ReferencedSeriesSequence
            for item in ref.ReferencedSOPSequence
        }
        assert pydicom.dcmread(path).SOPInstanceUID in evidence
    assert len(pacs.received(None)) == 1 + sr
    seg = pydicom.dcmread(path)
    assert seg.SOPClassUID == SEGMENTATION
    referenced = {
        item.ReferencedSOPInstanceUID
        for ref in seg.ReferencedSeriesSequence
        for item in ref.ReferencedInstanceSequence
    }
    assert referenced == {pydicom.dcmread(f).SOPInstanceUID for f in series}
    assert dciodvfy_errors(path) == []
    return seg


def queue_is_empty(state: Path) -> bool:
    return not any((state / "rounds").iterdir()) and not any((state / "results").iterdir())

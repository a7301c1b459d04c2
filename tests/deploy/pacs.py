"""A real Orthanc (Debian's orthanc, orthanc-python) with our forwarder; storescu; DICOM files.

Used by the end-to-end tests and by ``bench/pacs.py``. Everything listens on
127.0.0.1 (Orthanc's RemoteAccessAllowed is off and every client here talks to
loopback only); each Orthanc has its own temporary database.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.conftest import dcmtk, free_port

ROOT = Path(__file__).resolve().parents[2]
FORWARDER = ROOT / "deploy" / "orthanc" / "unet_forwarder.py"
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PYTHON_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancPython.so")
STORESCU = dcmtk("storescu") or "/usr/bin/storescu"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SR_STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def is_result(sop_class: str) -> bool:
    """A SEG or an SR: what the forwarder makes, never a source."""
    return sop_class == SEGMENTATION_STORAGE or sop_class.startswith(SR_STORAGE_PREFIX)


INSTALL_HINT = "make system-deps (Debian: apt-get install orthanc orthanc-python dcmtk dicom3tools)"


def require(missing: list[str], hint: str = INSTALL_HINT) -> None:
    """Skip, saying what is missing; under CI (CI=true) fail instead: a PACS integration
    that was never run is how the Orthanc plugin's deadlock shipped."""
    if missing:
        message = f"needs {', '.join(missing)}: {hint}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def missing_tools() -> list[str]:
    """The Debian programs the end-to-end tests need and this machine lacks."""
    wanted = {"orthanc": Path(ORTHANC), "orthanc-python": PYTHON_PLUGIN, "dcmtk": Path(STORESCU)}
    return [package for package, path in wanted.items() if not path.exists()]


@dataclass
class Orthanc:
    """One Orthanc process with the forwarder plugin, configured in ``folder``."""

    folder: Path
    forwarder: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    config_dir: Path | None = None  # start with this configuration folder instead (as systemd does)
    auth: tuple[str, str] | None = None  # the user of its REST API when it has users
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log(self) -> Path:
        return self.folder / "orthanc.log"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "unet-e2e",
            "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,  # loopback clients only
            "AuthenticationEnabled": False,
            "Plugins": [str(PYTHON_PLUGIN)],
            "PythonScript": str(FORWARDER),
            "UserMetadata": {"UnetSegmentation": 4201},
            "UnetForwarder": self.forwarder,
            "StableAge": 2,
            **self.extra,
        }

    def start(self, timeout_s: float = 60.0, wait_forwarder: bool = True) -> None:
        """Start and wait for the REST API (and the forwarder's first log line)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.config_dir or self.folder / "orthanc.json"
        if self.config_dir is None:
            path.write_text(json.dumps(self.config(), indent=1))
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [ORTHANC, "--verbose", str(path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout_s
        started = len(self.log_lines())
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {self.process.returncode}:\n{self.log_text()}"
                )
            try:
                system = httpx.get(f"{self.url}/system", timeout=2, auth=self.auth)
                if system.status_code == 200 and (
                    not wait_forwarder
                    or any("unet-forwarder" in line for line in self.log_lines()[started:])
                ):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc not ready after {timeout_s} s:\n{self.log_text()}")

    def stop(self, timeout_s: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM; (exit status, seconds to exit). Killed (status None) past ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return (self.process.returncode if self.process else None), 0.0
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            status: int | None = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            status = None
        return status, time.monotonic() - began

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def log_lines(self) -> list[str]:
        return self.log_text().splitlines()

    def forwarder_lines(self) -> list[str]:
        return [line for line in self.log_lines() if "unet-forwarder" in line]

    # -- REST -----------------------------------------------------------------------------

    def get(self, uri: str) -> Any:
        answer = httpx.get(f"{self.url}{uri}", timeout=30)
        answer.raise_for_status()
        return answer.json()

    def upload(self, data: bytes) -> str:
        """POST /instances (Orthanc's REST upload); the new instance's Orthanc id."""
        answer = httpx.post(f"{self.url}/instances", content=data, timeout=30)
        answer.raise_for_status()
        return str(answer.json()["ID"])

    def instances(self) -> list[dict[str, Any]]:
        """Every instance with its metadata (expanded)."""
        return [
            {"id": i, "metadata": self.get(f"/instances/{i}/metadata?expand")}
            for i in self.get("/instances")
        ]

    def outcome(self, instance_id: str) -> str | None:
        return self.get(f"/instances/{instance_id}/metadata?expand").get("UnetSegmentation")

    def file(self, instance_id: str) -> bytes:
        answer = httpx.get(f"{self.url}/instances/{instance_id}/file", timeout=30)
        answer.raise_for_status()
        return answer.content

    # -- DICOM ----------------------------------------------------------------------------

    def store(self, files: Sequence[Path], *options: str) -> subprocess.CompletedProcess[str]:
        """One association of dcmtk's storescu carrying ``files``."""
        command = [STORESCU, "-aec", "ORTHANC", *options, "127.0.0.1", str(self.dicom_port)]
        done = subprocess.run(
            [*command, *map(str, files)], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(f"storescu {' '.join(options)} failed:\n{done.stderr[-2000:]}")
        return done

    def wait_until(self, done: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.2)
        tail = "\n".join(self.forwarder_lines()[-20:])
        raise AssertionError(f"not within {timeout_s} s: {what}\nforwarder log:\n{tail}")

    def seg_references(self) -> Counter[str]:
        """SOP Instance UID of each source -> how many SEGs in Orthanc reference it."""
        counts: Counter[str] = Counter()
        for instance in self.instances():
            if instance["metadata"].get("SopClassUid") != SEGMENTATION_STORAGE:
                continue
            seg = pydicom.dcmread(io.BytesIO(self.file(instance["id"])))
            for series in seg.ReferencedSeriesSequence:
                counts.update(
                    ref.ReferencedSOPInstanceUID for ref in series.ReferencedInstanceSequence
                )
        return counts

    def sources(self) -> dict[str, str]:
        """Orthanc id -> SOP Instance UID of every instance but SEGs and SRs."""
        return {
            i["id"]: self.get(f"/instances/{i['id']}/simplified-tags")["SOPInstanceUID"]
            for i in self.instances()
            if not is_result(i["metadata"].get("SopClassUid", ""))
        }


# -- DICOM files ------------------------------------------------------------------------------


def _sample(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name, download=False)
    if not isinstance(path, str):
        raise FileNotFoundError(f"{name} is not among pydicom's bundled test files")
    return pydicom.dcmread(path)


def _fresh(ds: pydicom.Dataset, study: str, series: str, number: int) -> pydicom.Dataset:
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = number
    return ds


def ct_series(folder: Path, count: int, size: int = 128, study: str | None = None) -> list[Path]:
    """``count`` CT slices of one new series (pydicom's CT_small, ``size`` px, fresh UIDs)."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = study or generate_uid(), generate_uid()
    paths = []
    for number in range(1, count + 1):
        ds = _fresh(_sample("CT_small.dcm"), study, series, number)
        if size != ds.Rows:
            pixels = ds.pixel_array
            reps = -(-size // pixels.shape[0])
            ds.PixelData = (
                np.tile(pixels, (reps, reps))[:size, :size].astype(pixels.dtype).tobytes()
            )
            ds.Rows = ds.Columns = size
        ds.ImagePositionPatient = [0.0, 0.0, float(number)]
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# pydicom's bundled files in compressed transfer syntaxes the service decodes, with the
# storescu option that proposes that syntax (by default it proposes uncompressed ones only).
COMPRESSED_SAMPLES = {
    "SC_rgb_dcmtk_+eb+cy+np.dcm": "-xy",  # JPEG baseline
    "MR_small_jp2klossless.dcm": "-xv",  # JPEG 2000 lossless
    "MR_small_jpeg_ls_lossless.dcm": "-xt",  # JPEG-LS lossless
    "MR_small_RLE.dcm": "-xr",  # RLE lossless
    "SC_rgb_jpeg_gdcm.dcm": "-xs",  # JPEG lossless, first-order prediction
}


def samples(folder: Path, names: Iterable[str]) -> list[Path]:
    """pydicom's bundled files with fresh UIDs (a new study each), written to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        ds = _fresh(_sample(name), generate_uid(), generate_uid(), 1)
        path = folder / f"{Path(name).stem}-{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def modality_models(folder: Path) -> Path:
    """A model repository of a CT model (``ctnet``, card ``ctnet-card``, modalities CT) and
    an MR model (``mrnet``): the tests of the routing of series by modality."""
    from tests.nets import BINARY, default_card, save_model

    for name, modalities, seed in (("ctnet", ["CT"], 3), ("mrnet", ["MR"], 5)):
        card = default_card(BINARY, name=f"{name}-card", modalities=modalities)
        save_model(folder / f"{name}.onnx", BINARY, seed=seed, card=card)
    return folder


def ct_and_pt_series(folder: Path) -> tuple[list[Path], list[Path]]:
    """A CT series of 3 slices and a PT series of 2 (the same slices, Modality PT), 64 px."""
    ct = ct_series(folder / "ct", 3, size=64)
    pt = ct_series(folder / "pt", 2, size=64)
    for path in pt:
        ds = pydicom.dcmread(path)
        ds.Modality = "PT"
        ds.save_as(path)
    return ct, pt

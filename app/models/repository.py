"""The model repository: every ``.onnx`` of UNET_MODEL_REPOSITORY served by name, or the one
UNET_MODEL_PATH as a repository of one; picked per request; hot reloaded.

A model is listed from the moment its file is seen and answers once it is loaded and
warm. A poller thread looks at the folder every UNET_REPOSITORY_POLL seconds: a new file
is loaded and warmed before it answers; a replaced file (its or its sidecar's size or
time changed) is loaded beside the old version, which answers until the new one is warm;
a file that cannot be loaded is logged once and the old version (if any) stays; a removed
file stops answering (requests that hold it finish). Requests hold the Service they were
given, so a swap never changes a model under a running inference.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.errors import BadParameterError, UnavailableError, quote
from app.inference.card import sidecar_path
from app.models.load import ModelLoadError
from app.service import Service

log = logging.getLogger("app.models")

Stamp = tuple[tuple[int, int], ...]
NOT_READY_RETRY_S = 5


def stamp(path: Path) -> Stamp:
    """What tells a changed model: size and modification time of the file and its sidecar."""
    found = []
    for part in (path, sidecar_path(path)):
        try:
            status = part.stat()
        except OSError:
            found.append((-1, -1))
        else:
            found.append((status.st_size, status.st_mtime_ns))
    return tuple(found)


def model_file(folder: Path | None, name: str | None) -> Path:
    """``folder/name.onnx`` (no name: the folder's only model); ValueError naming the
    models when there is no such file, or several and no name. What ``unet-segment
    --model-repository DIR --model-name NAME`` serves, as the service does."""
    if folder is None:
        raise ValueError(
            "--model-name picks a model of --model-repository (or UNET_MODEL_REPOSITORY)"
        )
    names = sorted(path.stem for path in folder.glob("*.onnx") if path.is_file())
    if name is None and len(names) == 1:
        name = names[0]
    if name is None or name not in names:
        what = f"no model {name!r}" if name is not None else "several models and no name"
        raise ValueError(f"{folder}: {what} (--model-name; the models: {names or 'none'})")
    return folder / f"{name}.onnx"


@dataclass
class Entry:
    """One model of the repository: the version that answers (None until the first is warm),
    the stamp of the file it was loaded from, and the stamp of a file that failed to load."""

    name: str
    path: Path
    service: Service | None = None
    loaded: Stamp | None = None
    failed: Stamp | None = None
    error: str | None = None


class Repository:
    """Models by name. ``build(path)`` loads and warms one (ModelLoadError when it cannot)."""

    def __init__(
        self,
        build: Callable[[Path], Service],
        folder: Path | None,
        single: Path,
        default: str | None = None,
        poll: float = 10.0,
    ) -> None:
        self.build, self.folder, self.single, self.poll = build, folder, single, poll
        self.chosen_default = default
        self.entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.stopping = threading.Event()  # every model's: set on SIGTERM (bodies refused)
        self._thread: threading.Thread | None = None
        self.on_change: Callable[[str, Service | None], None] = lambda name, service: None

    def files(self) -> dict[str, Path]:
        """Name -> file: the folder's ``*.onnx`` by stem, or the single model."""
        if self.folder is None:
            return {self.single.stem: self.single}
        return {path.stem: path for path in sorted(self.folder.glob("*.onnx")) if path.is_file()}

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self.entries)

    def default_name(self) -> str | None:
        """UNET_DEFAULT_MODEL, else the only model, else None."""
        if self.chosen_default is not None:
            return self.chosen_default
        names = self.names()
        return names[0] if len(names) == 1 else None

    def get(self, name: str | None = None) -> Service:
        """The ready version of model ``name`` (None: the default). 422 for an unknown name or
        no default, naming the models; 503 while the model is not warm yet."""
        chosen = name if name is not None else self.default_name()
        with self._lock:
            entry = self.entries.get(chosen) if chosen is not None else None
            listed = ", ".join(map(repr, sorted(self.entries))) or "none"
        if entry is None:
            what = (
                f"unknown model {quote(name)}" if name is not None
                else "no model named and no default (UNET_DEFAULT_MODEL)"
            )  # fmt: skip
            raise BadParameterError(f"query parameter 'model': {what}; the models: {listed}")
        if entry.service is None and entry.error is not None:
            raise UnavailableError(
                f"model {entry.name!r} cannot be loaded: its file is tried again once it "
                f"changes ({entry.error[:200]})",
                NOT_READY_RETRY_S,
            )
        if entry.service is None or not entry.service.ready:
            raise UnavailableError(
                f"model {entry.name!r} is not ready: it is still loading; retry shortly",
                NOT_READY_RETRY_S,
            )
        return entry.service

    def adopt(self, name: str, path: Path, service: Service) -> None:
        """Serve ``service``, already loaded from ``path``, as ``name``."""
        service.ready, service.stopping = True, self.stopping
        with self._lock:
            self.entries[name] = Entry(name, path, service, stamp(path))

    def primary(self) -> Service | None:
        """The default model's ready version, else the first ready model's: what answers
        for the service as a whole (/health, /model, jobs)."""
        found = self.find()
        if found is not None:
            return found
        return next((e.service for e in self.listing() if e.service is not None), None)

    def find(self, name: str | None = None) -> Service | None:
        """The ready version of ``name`` (None: the default), or None."""
        try:
            return self.get(name)
        except (BadParameterError, UnavailableError):
            return None

    def choose(self, modality: str) -> tuple[str | None, str]:
        """The model for a DICOM series of ``modality`` (the DICOM gateway and the Orthanc
        plugin ask): a ready model whose card's ``modalities`` has it (the default first),
        else the default when its card names no modalities (it is meant for any); else
        None. With the reason, in words. UnavailableError (503) while a model is loading."""
        wanted, default = modality.strip().upper(), self.default_name()
        loading = [e.name for e in self.listing() if e.service is None and e.error is None]
        meant: dict[str, list[str]] = {}
        for entry in self.listing():
            if entry.service is not None and entry.service.ready:
                listed = (entry.service.model.card.model_extra or {}).get("modalities") or []
                meant[entry.name] = [str(m).upper() for m in listed]
        fits = sorted(name for name, listed in meant.items() if wanted in listed)
        if loading and (not fits or default in loading):  # the answer may change with it
            raise UnavailableError(
                f"model {quote(loading[0])} is still loading: the model for this modality "
                "is chosen once its card is known",
                NOT_READY_RETRY_S,
            )
        if fits:
            name = default if default in fits else fits[0]
            return name, f"{name}: its card lists the modality"
        if default in meant and not meant[default]:
            return default, f"{default}: the default model, its card lists no modalities"
        named = "; ".join(f"{n}: {', '.join(m) or 'any'}" for n, m in sorted(meant.items()))
        # the reason names no DICOM value: the gateway and the plugin log it
        return None, f"no model is meant for this modality (the models: {named or 'none'})"

    def listing(self) -> list[Entry]:
        with self._lock:
            return [self.entries[name] for name in sorted(self.entries)]

    def scan(self) -> None:
        """One look at the files: load what is new or changed, drop what is gone."""
        files = self.files()
        with self._lock:
            gone = [name for name in self.entries if name not in files]
            for name in gone:
                del self.entries[name]
            for name, path in files.items():
                self.entries.setdefault(name, Entry(name, path))
        for name in gone:
            log.info("model %s removed: it no longer answers", name)
            self.on_change(name, None)
        for name, path in files.items():
            if not self._stop.is_set():
                self._refresh(name, path)

    def _refresh(self, name: str, path: Path) -> None:
        entry = self.entries.get(name)
        now = stamp(path)
        if entry is None or now in (entry.loaded, entry.failed):
            return
        try:
            service = self.build(path)
        except ModelLoadError as exc:
            entry.failed, entry.error = now, str(exc)
            kept = f"version {entry.service.model.card.version} stays" if entry.service else (
                "it does not answer"
            )  # fmt: skip
            log.error("model %s cannot be loaded (%s): %s", name, kept, exc)
            return
        if stamp(path) != now:  # written while it was loaded: load again at the next look
            entry.failed, entry.error = now, "the file changed while it was being loaded"
            return
        service.ready, service.stopping = True, self.stopping
        old = entry.service
        entry.service, entry.loaded, entry.failed, entry.error = service, now, None, None
        card = service.model.card
        replaced = f", replacing {old.model.card.version}" if old is not None else ""
        log.info("model %s ready: %s %s%s", name, card.name, card.version, replaced)
        self.on_change(name, service)

    def start(self) -> None:
        """Poll the folder in a thread (a repository of one file is not polled)."""
        if self.folder is None or self.poll <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="model-repository", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.scan()
            except Exception:  # a bad look at the folder must not end the polling
                log.exception("model repository: the look at %s failed", self.folder)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            for entry in self.entries.values():
                if entry.service is not None:
                    entry.service.ready = False

"""What every output format is: an Output (name, media type, which inputs and frames it
carries, a factory) and the Encoder it makes; Outputs, the registry of them.

An encoder is built from what it needs -- the decoded input's description, the
model card and its file's SHA-256, the request's Options -- never from the HTTP
service, so that HTTP, jobs and the command line share it. It receives each
frame's Prediction with ``add`` and returns the answer's bytes with ``finish``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from app.codecs.errors import FrameCountError, OptionError, UnsupportedOutputError
from app.codecs.images import DecodedImage
from app.codecs.pyramid import LabelStore
from app.inference import LoadedModel
from app.inference.card import ModelCard
from app.inference.predictor import Prediction


@dataclass(frozen=True)
class Options:
    """The request's options for its output, checked once against the model (``check``).

    threshold: (0, 1), checked where it is applied (Predictor.mask); class_index:
    1 .. len(classes) - 1, checked here for every format; tta: a flag; min_area:
    >= 0 (the HTTP schema), overriding the card's recipe.
    """

    threshold: float = 0.5
    class_index: int = 1
    tta: bool = False
    min_area: int | None = None  # object formats: None = the card's
    outline_objects: bool = False  # overlay: outline each object instead of filling classes

    def check(self, card: ModelCard) -> None:
        """OptionError (422) when ``class_index`` names no class of this model."""
        classes = card.classes
        if not 1 <= self.class_index < len(classes):
            names = ", ".join(f"{i} = {name}" for i, name in enumerate(classes) if i)
            raise OptionError(
                f"query parameter 'class' must be in 1..{len(classes) - 1} ({names}), "
                f"got {self.class_index}"
            )


@dataclass(frozen=True)
class Provenance:
    """What an output may say about the model that made it: its card and its file's
    SHA-256 (picklable: no engine, for a Dask task)."""

    card: ModelCard
    sha256: str

    @classmethod
    def of(cls, model: LoadedModel) -> Provenance:
        return cls(model.card, model.engine.sha256)


def json_header(image: DecodedImage, model: Provenance) -> dict[str, object]:
    """What every JSON answer starts with: the input's size and the model."""
    card = model.card
    return {
        "height": image.height,
        "width": image.width,
        "model": {"name": card.name, "version": card.version, "sha256": model.sha256},
    }


def json_bytes(document: Any) -> bytes:
    """The object formats' JSON: orjson, which writes numpy arrays (polygon rings) as they are,
    without a Python list per point."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


class Encoder(Protocol):
    media_type: str
    headers: dict[str, str]  # what the answer carries besides its body (X-Object-Count)

    def add(self, index: int, prediction: Prediction) -> None:
        """Frame ``index``'s prediction (frames come in order)."""

    def finish(self) -> bytes:
        """The answer's body."""


EncoderFactory = Callable[[DecodedImage, Provenance, Options], Encoder]


@dataclass(frozen=True)
class Output:
    """One output format.

    name: the ``format`` value; media_type: of the answer; multi_frame: carries
    several frames (else a multi-frame input is refused); inputs: the input
    formats it needs (None: any); make: the encoder factory, which may refuse
    the options or the input (before any inference); extension: of the files
    the command line writes (default: the name).
    """

    name: str
    media_type: str
    description: str
    make: EncoderFactory
    multi_frame: bool = False
    inputs: frozenset[str] | None = None
    extension: str = ""  # of a file holding the answer (command line), after the input's stem

    def accepts(self, input_format: str) -> bool:
        return self.inputs is None or input_format in self.inputs


OUTLINES = "objects.geojson"  # the GeoJSON of a large image's objects, in its store's folder


@dataclass(frozen=True)
class LargeOutput:
    """A format written from the store on disk of the large-image path (any image size).

    content: what the store's image holds -- ``classes`` (class indices), ``objects``
    (object ids), ``outlines`` (object ids, and the objects' GeoJSON as OUTLINES in
    the store's folder); pyramid: whether the store gets its lower levels.
    finish(store, path): turn the finished store (app/codecs/pyramid.py) into the file
    or folder ``path``; the store is gone after. media_type: of the file as a job's
    result is served (a folder is served as a zip of it, made on the fly).
    """

    name: str
    description: str
    finish: Callable[[LabelStore, Path], None]
    extension: str
    media_type: str = "application/zip"
    content: Literal["classes", "objects", "outlines"] = "classes"
    pyramid: bool = True


def either(names: list[str]) -> str:
    """``png, rle or probability``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class Outputs:
    """The registry of output formats: the one list that the OpenAPI enum of ``format``,
    the command line's choices and every "use format=..." message come from."""

    def __init__(self, outputs: Iterable[Output] = ()) -> None:
        self._outputs: dict[str, Output] = {}
        for output in outputs:
            self.add(output)

    def add(self, output: Output) -> None:
        if output.name in self._outputs:
            raise ValueError(f"output format {output.name!r} is registered already")
        self._outputs[output.name] = output

    def __iter__(self) -> Iterator[Output]:
        return iter(self._outputs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._outputs

    def names(self) -> list[str]:
        return list(self._outputs)

    def extension(self, name: str) -> str:
        """The file extension of format ``name``'s answers (``png``, ``rle.json``, ...)."""
        return self._outputs[name].extension or name

    def encoder(
        self, name: str, image: DecodedImage, model: Provenance, options: Options
    ) -> Encoder:
        """The encoder of format ``name`` for this input, or the 415/422 that says why not."""
        options.check(model.card)
        self.check_input(name, image.format, len(image.frames))
        return self._outputs[name].make(image, model, options)

    def check_input(self, name: str, image_format: str, frames: int) -> None:
        """415 when format ``name`` cannot be made of an ``image_format`` input, 422 when it
        carries one frame and the input has several (a job's, before its 202)."""
        output = self._outputs[name]
        if not output.accepts(image_format):
            usable = [o.name for o in self if o.inputs is None]
            raise UnsupportedOutputError(
                f"format={name} needs a {either(sorted(f.upper() for f in output.inputs or ()))} "
                f"input, this is {image_format.upper()}; use format={either(usable)}"
            )
        if frames > 1 and not output.multi_frame:
            usable = [o.name for o in self if o.multi_frame and o.accepts(image_format)]
            raise FrameCountError(
                f"the input has {frames} frames and format={name} carries one; "
                f"use format={either(usable)}"
            )

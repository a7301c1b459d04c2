"""What a request, a job or a batch runs with, made in one place: the model's Predictor
(one input shape on a GPU), the Options checked once against the model card (a 422 naming
the bad option, before any body is read), the threshold when none is asked (the card's
calibrated one, else 0.5), the Limits the decoders check, and ``Context``, the bundle a
job's or a batch's every input shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.codecs.images import Decoders, Limits
from app.codecs.outputs import Options, Provenance
from app.inference import LoadedModel, ModelCard, Predictor, ProviderOptions, load_model
from app.inference.predictor import CPU_BATCH_SIZE, CPU_TILE_SIZE
from app.inference.providers import GPU
from app.inference.tiler import RunFn
from app.service import Service, input_formats

DEFAULT_THRESHOLD = 0.5  # when neither the request nor the model card gives one


def threshold_for(card: ModelCard, requested: float | None) -> float:
    """The request's threshold, else the card's calibrated one, else 0.5."""
    return requested if requested is not None else card.threshold or DEFAULT_THRESHOLD


def options_for(
    card: ModelCard,
    threshold: float | None = None,
    class_index: int = 1,
    tta: bool = False,
    min_area: int | None = None,
    objects: bool = False,
) -> Options:
    """The Options of a request (POST /segment, POST /jobs) or a batch (unet-segment, Dask),
    checked against ``card``: OptionError (422) for a class the model does not have."""
    options = Options(threshold_for(card, threshold), class_index, tta, min_area, objects)
    options.check(card)
    return options


def on_gpu(model: LoadedModel) -> bool:
    """Whether the model runs on a GPU provider (CUDA, TensorRT)."""
    return model.engine.providers[0] in GPU


def predictor_for(
    model: LoadedModel, tile_size: int, batch_size: int, run: RunFn | None = None
) -> Predictor:
    """The model's Predictor; on a GPU with one input shape for every image (no per-shape
    cuDNN search or TensorRT engine). run: instead of the engine's own (a job's, which
    waits for its turn at the gate). ValueError for a tiling the model cannot take."""
    return Predictor(
        run or model.engine.run, model.card, tile_size=tile_size, batch_size=batch_size,
        fixed_shape=on_gpu(model),
    )  # fmt: skip


def request_limits(service: Service, tta: bool) -> Limits:
    """What the decoders check from a request's header: pixels, frames and the work it
    costs with or without TTA (POST /segment)."""
    settings = service.settings

    def work(width: int, height: int, frames: int) -> None:
        service.work.check(width, height, frames, tta)

    return Limits(settings.max_image_pixels, settings.max_frames, work)


@dataclass(frozen=True)
class Setup:
    """What a batch is run with (the command line's options); hashable, picklable."""

    model: Path
    providers: str = "auto"
    precision: str = "auto"  # UNET_PRECISION's values: auto, fp32, bf16, fp16
    tile: int = CPU_TILE_SIZE
    batch: int = CPU_BATCH_SIZE
    threshold: float | None = None  # None: the card's, else 0.5
    class_index: int = 1  # the class of the probability and of the objects' scores
    tta: bool = False
    min_area: int | None = None
    objects: bool = False  # format overlay: outline each object instead of filling classes
    max_pixels: int = 64 << 20  # the service's default UNET_MAX_IMAGE_PIXELS (8192 x 8192)
    probability: bool = False  # large formats: also store round(p(class 1) * 65535)
    skip_background: bool = False  # large images: predict only the blocks near tissue
    pixel_size: float | None = None  # µm: the inputs' pixel size, over what their files say


@dataclass(frozen=True)
class Context:
    """The model, predictor, decoders, options and limits every input of a job or a batch
    shares. probability: large formats also store round(p(class 1) * 65535);
    skip_background: large images predict only the blocks near tissue; pixel_size: the
    inputs' pixel size (µm) as the user states it (app/pipeline/resolution.py)."""

    model: Provenance
    predictor: Predictor
    decoders: Decoders
    options: Options
    limits: Limits
    probability: bool = False
    skip_background: bool = False
    pixel_size: float | None = None

    @classmethod
    def load(cls, setup: Setup) -> Context:
        """A batch's (the command line, a Dask worker): ``setup``'s model loaded here."""
        engine = ProviderOptions(precision=setup.precision)
        loaded = load_model(setup.model, setup.providers, options=engine)
        card = loaded.card
        return cls(
            Provenance.of(loaded),
            predictor_for(loaded, setup.tile, setup.batch),
            input_formats(card),
            options_for(
                card,
                setup.threshold,
                setup.class_index,
                setup.tta,
                setup.min_area,
                setup.objects,
            ),
            Limits(setup.max_pixels),
            setup.probability,
            setup.skip_background,
            setup.pixel_size,
        )

    @classmethod
    def of_job(
        cls,
        service: Service,
        options: Options,
        run: RunFn,
        skip_background: bool = False,
        pixel_size: float | None = None,
    ) -> Context:
        """A job's: the service's model, tiling and decoders, every tile batch through
        ``run`` (the gate); the pixel and frame limits of the service, no work limit."""
        base = service.predictor
        predictor = predictor_for(service.model, base.tile_size, base.batch_size, run)
        limits = Limits(service.settings.max_image_pixels, service.settings.max_frames)
        model, inputs = Provenance.of(service.model), service.inputs
        return cls(model, predictor, inputs, options, limits, False, skip_background, pixel_size)

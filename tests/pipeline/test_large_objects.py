"""Objects of images beyond memory: found block by block and merged across block borders,
they are the in-memory objects -- components exactly (same partition, same classes), a
watershed up to the order of its ties -- in the instances image and in the GeoJSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import shapely
import zarr
from scipy import sparse

from app import cli
from app.codecs.images import DecodedImage
from app.codecs.outputs import LARGE_OUTPUTS, Options, Provenance, default_outputs
from app.codecs.outputs._objects import objects_of
from app.inference import Predictor, load_model
from app.inference.objects import Objects
from app.pipeline.context import Setup
from app.pipeline.large import segment_large
from app.pipeline.objects import local_map
from tests.nets import UNetSpec, default_card, save_model
from tests.samples import smooth_noise, write_ome_tiff

SPEC = UNetSpec(depth=2, base=2)  # halo 20: fast
IMAGE = smooth_noise(1200, 1700, seed=3)


@dataclass(frozen=True)
class Case:
    model: Path
    predictor: Predictor
    info: Provenance
    options: Options
    reference: Objects


def case(folder: Path, method: str) -> Case:
    base = folder / "base.onnx"
    save_model(base, SPEC, seed=3, card=default_card(SPEC, name="base"))
    loaded = load_model(base)
    probs, _ = Predictor(loaded.engine.run, loaded.card).probabilities(IMAGE)
    objects: dict[str, object] = {"method": method}
    if method == "watershed":  # seeds: the 30 % of pixels least likely boundary
        objects |= {"boundary_class": 1, "seed_threshold": float(np.quantile(probs[0], 0.3))}
    model = folder / f"{method}.onnx"
    save_model(model, SPEC, seed=3, card=default_card(SPEC, name=method, objects=objects))
    loaded = load_model(model)
    predictor = Predictor(loaded.engine.run, loaded.card)
    options = Options(threshold=float(np.median(probs[0])))
    info = Provenance.of(loaded)
    prediction = predictor.predict(IMAGE, threshold=options.threshold)
    return Case(model, predictor, info, options, objects_of(prediction, info, options))


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return case(tmp_path_factory.mktemp("components"), "components")


@pytest.fixture(scope="module")
def watershed(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return case(tmp_path_factory.mktemp("watershed"), "watershed")


def instances(c: Case, folder: Path, block_size: int, mapper: object = local_map) -> np.ndarray:
    path = folder / "out.instances.ome.zarr"
    result = segment_large(
        IMAGE[:, :, None], path, LARGE_OUTPUTS["instances"], c.predictor, c.info, c.options,
        block_size=block_size, mapper=mapper,  # type: ignore[arg-type]
    )  # fmt: skip
    labels = zarr.open_group(str(path), mode="r")["0"][:]
    assert labels.dtype == np.uint32
    assert result.objects == labels.max()
    return labels.astype(np.int64)


def agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, np.ndarray]:
    """(share of pixels whose object is not the one it overlaps most, that map ours -> theirs)."""
    overlap = sparse.coo_matrix((np.ones(ours.size), (ours.ravel(), theirs.ravel()))).tocsr()
    best = np.asarray(overlap.argmax(axis=1)).ravel()
    return float((best[ours] != theirs).mean()), best


@pytest.mark.parametrize("block_size", [200, 450, 5000])
def test_components_are_the_in_memory_objects_for_any_block_size(
    block_size: int, components: Case, tmp_path: Path
) -> None:
    ours, theirs = instances(components, tmp_path, block_size), components.reference
    pairs = np.unique(np.stack([ours.ravel(), theirs.labels.ravel()]), axis=1)
    assert pairs.shape[1] == ours.max() + 1 == theirs.count + 1  # one object <-> one object
    _, best = agreement(ours, theirs.labels)
    assert np.array_equal(theirs.classes[best[1:]], np.ones(theirs.count))
    crossing = sum(  # objects that span a block border: the merge is exercised
        len(np.intersect1d(ours[:, b - 1], ours[:, b])) for b in range(192, 1700, 192)
    )
    assert block_size > 1700 or crossing > 10


def test_watershed_objects_agree_with_in_memory_up_to_ties(watershed: Case, tmp_path: Path) -> None:
    """Flooded in windows, the ties of the flood can go the other way: measured 0.06 % of the
    pixels on this noise (30 % seeds, 256 levels); the objects are the same seeds."""
    ours, theirs = instances(watershed, tmp_path, 450), watershed.reference
    assert ours.max() == theirs.count > 1000
    wrong, _ = agreement(ours, theirs.labels)
    assert wrong < 2e-3
    single, _ = agreement(instances(watershed, tmp_path / "one", 5000), theirs.labels)
    assert single == 0.0  # one block: exactly the in-memory flood


def test_on_dask_the_objects_are_the_same(components: Case, cluster: str, tmp_path: Path) -> None:
    from app.pipeline.dask import Cluster

    on = Cluster(cluster, Setup(components.model), components.info.sha256)
    try:
        on_dask = instances(components, tmp_path / "dask", 450, on.map)
    finally:
        on.close()
    assert np.array_equal(on_dask, instances(components, tmp_path / "here", 450))


def geometries(collection: dict[str, object]) -> dict[bytes, tuple[str, int]]:
    out = {}
    for feature in collection["features"]:  # type: ignore[attr-defined]
        shape = shapely.normalize(shapely.geometry.shape(feature["geometry"]))
        props = feature["properties"]
        out[shapely.to_wkb(shape)] = (
            props["classification"]["name"],
            props["measurements"]["area"],
        )
    return out


def test_the_geojson_of_a_large_image_is_the_in_memory_one(
    components: Case, tmp_path: Path
) -> None:
    """Same polygons (exact, holes included), classes, areas; scores within 2e-5 (16-bit p).
    With min_area, so that dropping small objects across blocks is checked too."""
    path, options = tmp_path / "out.geojson", replace(components.options, min_area=40)
    result = segment_large(
        IMAGE[:, :, None], path, LARGE_OUTPUTS["geojson"], components.predictor,
        components.info, options, block_size=300,
    )  # fmt: skip
    ours = json.loads(path.read_text())
    image = DecodedImage("png", [IMAGE], IMAGE.shape[1], IMAGE.shape[0])
    encoder = default_outputs().encoder("geojson", image, components.info, options)
    encoder.add(0, components.predictor.predict(IMAGE, threshold=options.threshold))
    theirs = json.loads(encoder.finish())
    assert len(ours["features"]) == len(theirs["features"]) == result.objects
    assert 100 < len(ours["features"]) < components.reference.count
    assert geometries(ours) == geometries(theirs)
    scores = [
        sorted(f["properties"]["measurements"]["score"] for f in collection["features"])
        for collection in (ours, theirs)
    ]
    assert np.allclose(*scores, atol=2e-5, rtol=0)
    ids = sorted(f["properties"]["id"] for f in ours["features"])
    assert ids == list(range(1, len(ids) + 1))
    assert [p.name for p in tmp_path.iterdir()] == ["out.geojson"]


def test_the_geojson_of_a_watershed_model_scores_its_cells(watershed: Case, tmp_path: Path) -> None:
    """The ISBI card's objects are cells of class 0 (background, between membranes):
    their scores come from p(class 0), stored for it."""
    path = tmp_path / "cells.geojson"
    options = replace(watershed.options, min_area=30)
    result = segment_large(
        IMAGE[:, :, None], path, LARGE_OUTPUTS["geojson"], watershed.predictor,
        watershed.info, options, block_size=450,
    )  # fmt: skip
    features = json.loads(path.read_text())["features"]
    assert len(features) == result.objects > 100
    assert {f["properties"]["classification"]["name"] for f in features} == {"background"}
    assert all(0 < f["properties"]["measurements"]["score"] <= 1 for f in features)


def test_the_command_line_picks_the_large_form_above_max_pixels(
    components: Case, tmp_path: Path
) -> None:
    tif = tmp_path / "big.ome.tif"
    write_ome_tiff(tif, IMAGE)
    out = tmp_path / "out"
    common = ["--model", str(components.model), "--out", str(out), "--max-pixels", "1000000"]
    common += ["--threshold", repr(components.options.threshold)]
    assert cli.main([str(tif), "--format", "instances", *common]) == 0
    ids = zarr.open_group(str(out / "big.instances.ome.zarr"), mode="r")["0"][:]
    assert ids.max() == components.reference.count
    assert cli.main([str(tif), "--format", "png", *common]) == 1
    rows = json.loads((out / "summary.json").read_text())
    assert "above --max-pixels 1000000" in rows[0]["error"]
    assert "use format=ome-zarr, ome-tiff, instances or geojson" in rows[0]["error"]
    assert cli.main([str(tif), "--format", "geojson", "--min-area", "40", *common]) == 0
    rows = json.loads((out / "summary.json").read_text())
    assert 100 < rows[0]["objects"] < components.reference.count
    assert len(json.loads((out / "big.geojson").read_text())["features"]) == rows[0]["objects"]

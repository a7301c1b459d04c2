"""Several models by name (UNET_MODEL_REPOSITORY): picked per request, listed, hot reloaded,
each answering exactly as it does alone."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.errors import UnavailableError
from app.main import create_app
from app.metrics import Metrics
from app.models.load import load_service
from app.models.repository import Repository
from app.service import Service
from app.settings import Settings
from deploy.demo_model import default_card, save_model
from tests.app.test_startup import assert_fails_clearly, start
from tests.conftest import settings
from tests.deploy.pacs import modality_models
from tests.jobs.test_jobs import submit, wait
from tests.nets import BINARY
from tests.samples import noise, png

IMAGE = png(noise(70, 90, seed=5))
POLL_S = 0.2


def repository(folder: Path, *models: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for model in models:
        shutil.copy(model, folder / model.name)
    return folder


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory, binary_model: Path, softmax_model: Path) -> Path:
    return repository(tmp_path_factory.mktemp("repo"), binary_model, softmax_model)


@pytest.fixture(scope="module")
def served(two: Path, binary_model: Path) -> Iterator[TestClient]:
    config = settings(binary_model, model_repository=two, default_model="binary")
    with TestClient(create_app(config)) as client:
        yield client


def answer(client: TestClient, query: str = "", image: bytes = IMAGE) -> bytes:
    response = client.post(f"/segment?format=probability{query}", content=image)
    assert response.status_code == 200, response.text
    return response.content


def test_models_lists_every_model_ready_with_its_card(served: TestClient) -> None:
    listing = served.get("/models").json()
    assert listing["default"] == "binary"
    models = {m["name"]: m for m in listing["models"]}
    assert sorted(models) == ["binary", "softmax3"]
    assert all(m["ready"] for m in models.values())
    assert models["binary"]["default"]
    assert not models["softmax3"]["default"]
    assert models["softmax3"]["card"]["classes"] == ["background", "class_1", "class_2"]
    assert served.get("/model?model=softmax3").json()["model"] == "softmax3"
    assert served.get("/model").json()["model"] == "binary"


def test_interleaved_requests_answer_as_each_model_alone(
    served: TestClient, client: TestClient, softmax_client: TestClient
) -> None:
    alone = {"binary": answer(client), "softmax3": answer(softmax_client)}
    assert alone["binary"] != alone["softmax3"]
    for name in ["binary", "softmax3", "softmax3", "binary", "softmax3", "binary"]:
        assert answer(served, f"&model={name}") == alone[name]
    assert answer(served) == alone["binary"]  # the default


def test_an_unknown_model_is_422_naming_the_models(served: TestClient) -> None:
    response = served.post("/segment?model=liver", content=IMAGE)
    assert response.status_code == 422
    assert "'liver'" in response.json()["detail"]
    assert "'binary', 'softmax3'" in response.json()["detail"]


def test_without_a_default_a_request_must_name_its_model(
    two: Path, binary_model: Path, softmax_client: TestClient
) -> None:
    with TestClient(create_app(settings(binary_model, model_repository=two))) as client:
        response = client.post("/segment", content=IMAGE)
        assert response.status_code == 422
        assert "no default" in response.json()["detail"]
        assert answer(client, "&model=softmax3") == answer(softmax_client)
        assert client.get("/health/ready").status_code == 200


def test_metrics_carry_the_model(served: TestClient) -> None:
    answer(served, "&model=softmax3")
    text = served.get("/metrics").text
    assert 'unet_images_total{model="softmax3"}' in text
    assert 'unet_model_info{model="binary",name="binary"' in text


def replaced(path: Path, version: str, seed: int) -> Path:
    """A new binary model written beside ``path``, then moved over it (as a deploy does)."""
    card = default_card(BINARY, name="binary")
    card["version"] = version
    new = save_model(path.with_suffix(".tmp"), BINARY, seed=seed, card=card)
    os.replace(new, path)
    return path


def wait_for(check: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the repository did not change in time"
        time.sleep(0.05)


def provider(client: TestClient) -> str:
    return str(client.get("/model").json()["providers"][0])


def versions(client: TestClient) -> dict[str, str | None]:
    return {m["name"]: m.get("version") for m in client.get("/models").json()["models"]}


class Load:
    """Requests to the binary model in a thread, all the time: every answer must be 200."""

    def __init__(self, client: TestClient) -> None:
        self.client, self.statuses = client, list[int]()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        while not self.stop.is_set() and len(self.statuses) < 2000:
            self.statuses.append(self.client.post("/segment", content=IMAGE).status_code)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def test_models_are_added_replaced_kept_when_corrupt_and_removed_while_requests_run(
    tmp_path: Path,
    binary_model: Path,
    softmax_model: Path,
    softmax_client: TestClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = repository(tmp_path / "repo", binary_model)
    config = settings(
        binary_model, model_repository=folder, default_model="binary", repository_poll=POLL_S
    )
    caplog.set_level(logging.INFO, logger="app.models")
    with TestClient(create_app(config)) as client, Load(client) as load:
        first = answer(client)
        shutil.copy(softmax_model, folder / "softmax3.onnx")  # added
        wait_for(lambda: versions(client).get("softmax3") == "0.0.0")
        assert answer(client, "&model=softmax3") == answer(softmax_client)

        replaced(folder / "binary.onnx", "2.0.0", seed=11)  # replaced
        wait_for(lambda: versions(client)["binary"] == "2.0.0")
        second = answer(client)
        assert second != first
        info = [line for line in client.get("/metrics").text.splitlines() if "model_info{" in line]
        assert [line for line in info if 'model="binary"' in line] == [
            f'unet_model_info{{model="binary",name="binary",provider="{provider(client)}",'
            'version="2.0.0"} 1.0'
        ]

        (folder / "binary.onnx").write_bytes(b"not an onnx model")  # corrupt: the old stays
        wait_for(lambda: client.get("/models").json()["models"][0].get("error") is not None)
        assert versions(client)["binary"] == "2.0.0"
        assert answer(client) == second

        (folder / "softmax3.onnx").unlink()  # removed
        wait_for(lambda: "softmax3" not in versions(client))
        assert client.post("/segment?model=softmax3", content=IMAGE).status_code == 422
    assert load.statuses
    assert set(load.statuses) == {200}, set(load.statuses)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "version 2.0.0 stays" in errors[0]


def test_a_replaced_model_answers_as_the_new_file_alone(tmp_path: Path, binary_model: Path) -> None:
    alone = replaced(repository(tmp_path / "alone", binary_model) / "binary.onnx", "3", seed=12)
    with TestClient(create_app(settings(alone))) as client:
        expected = answer(client)
    folder = repository(tmp_path / "repo", binary_model)
    config = settings(binary_model, model_repository=folder, repository_poll=POLL_S)
    with TestClient(create_app(config)) as client:
        replaced(folder / "binary.onnx", "3", seed=12)
        wait_for(lambda: versions(client)["binary"] == "3")
        assert answer(client) == expected


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda folder, model: folder, ["UNET_MODEL_REPOSITORY", "no .onnx"]),
        (lambda folder, model: folder / "absent", ["UNET_MODEL_REPOSITORY", "not a folder"]),
    ],
)
def test_a_repository_without_models_stops_start_up(
    tmp_path: Path, binary_model: Path, make: Callable[[Path, Path], Path], words: list[str]
) -> None:
    env = {"UNET_MODEL_REPOSITORY": str(make(tmp_path, binary_model))}
    assert_fails_clearly(start(env), *words)


@pytest.mark.parametrize("variable", ["UNET_MODEL_PATH", "UNET_MODEL_REPOSITORY"])
def test_a_default_model_that_is_not_served_stops_start_up(
    tmp_path: Path, binary_model: Path, variable: str
) -> None:
    """Beside a single model path or a repository, a default naming another model."""
    where = binary_model if variable == "UNET_MODEL_PATH" else repository(tmp_path, binary_model)
    env = {variable: str(where), "UNET_DEFAULT_MODEL": "liver"}
    assert_fails_clearly(start(env), "UNET_DEFAULT_MODEL", "'binary'")


def test_a_corrupt_model_beside_good_ones_is_listed_with_its_error(
    tmp_path: Path, binary_model: Path
) -> None:
    folder = repository(tmp_path / "repo", binary_model)
    (folder / "broken.onnx").write_bytes(b"\x00" * 100)
    config = settings(binary_model, model_repository=folder)
    with TestClient(create_app(config)) as client:
        models = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert models["binary"]["ready"]
        assert not models["broken"]["ready"]
        assert "broken.onnx" in models["broken"]["error"]
        response = client.post("/segment?model=broken", content=IMAGE)
        assert response.status_code == 503
        assert "'broken' cannot be loaded" in response.json()["detail"]
        assert client.post("/segment?model=binary", content=IMAGE).status_code == 200


def test_a_job_runs_on_the_model_it_names(
    served: TestClient, client: TestClient, softmax_client: TestClient
) -> None:
    for query, alone in (("?model=softmax3", softmax_client), ("", client)):
        job_id = submit(served, IMAGE, query + ("&" if query else "?") + "format=probability")
        job, _ = wait(served, job_id)
        assert job["status"] == "succeeded", job
        assert served.get(f"/jobs/{job_id}/result").content == answer(alone)
        stored = served.app.state.jobs.store.get(job_id)  # type: ignore[attr-defined]
        assert stored.request.model == ("softmax3" if query else "binary")  # kept by name
    response = served.post("/jobs?model=liver", content=IMAGE)
    assert response.status_code == 422
    assert "'liver'" in response.json()["detail"]


def test_empty_repository_settings_are_unset(binary_model: Path) -> None:
    """compose passes ``${UNET_MODEL_REPOSITORY:-}``: empty is no repository, not ``.``."""
    config = settings(binary_model, model_repository="", default_model=" ")
    assert config.model_repository is None
    assert config.default_model is None


@contextmanager
def loading(
    config: Settings, folder: Path, default: str, held: str, add: Callable[[], object]
) -> Iterator[Repository]:
    """The repository of ``folder`` loaded; then ``add()`` and a look at the folder whose
    load of model ``held`` waits until the block ends (the repository is yielded)."""
    gate = threading.Event()

    def build(path: Path) -> Service:
        if path.stem == held:
            gate.wait(60)
        return load_service(config, Metrics(), path=path)

    models = Repository(build, folder, config.model_path, default, poll=0)
    models.scan()
    add()
    scanning = threading.Thread(target=models.scan)
    scanning.start()
    try:
        wait_for(lambda: held in models.names())
        yield models
    finally:
        gate.set()
        scanning.join(timeout=60)


def test_the_model_for_a_modality_is_chosen_once_no_model_is_still_loading(
    tmp_path: Path, binary_model: Path, softmax_model: Path
) -> None:
    """A model being added might be the one meant for the series: until its card is known,
    the choice is 503 (ask again), not "no model" -- which the gateway takes as final."""
    folder = repository(tmp_path / "repo", binary_model)
    config = settings(binary_model, model_repository=folder, default_model="binary")
    add = lambda: shutil.copy(softmax_model, folder / "softmax3.onnx")  # noqa: E731
    with (
        loading(config, folder, "binary", "softmax3", add) as models,
        pytest.raises(UnavailableError, match="'softmax3' is still loading"),
    ):
        models.choose("CT")
    assert models.choose("CT")[0] == "binary"  # its card names no modality: any
    models.stop()


def test_a_model_that_fits_answers_while_another_loads(tmp_path: Path) -> None:
    """A ready CT model answers for CT while an MR model is added; MR waits for it."""
    folder = modality_models(tmp_path / "repo")  # ctnet (CT), mrnet (MR)
    (folder / "mrnet.onnx").rename(tmp_path / "mrnet.onnx")
    config = settings(folder / "ctnet.onnx", model_repository=folder, default_model="ctnet")
    add = lambda: (tmp_path / "mrnet.onnx").rename(folder / "mrnet.onnx")  # noqa: E731
    with loading(config, folder, "ctnet", "mrnet", add) as models:
        assert models.choose("CT")[0] == "ctnet"  # no model still loading changes that
        with pytest.raises(UnavailableError, match="'mrnet' is still loading"):
            models.choose("MR")
    assert models.choose("MR")[0] == "mrnet"
    models.stop()

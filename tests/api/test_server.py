"""A real uvicorn process on loopback: the main clauses of API.md over real HTTP."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pycocotools import mask as coco_mask

from tests.conftest import API_KEY, Server, default_engine
from tests.samples import bad_corpus, noise, png, tiff

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
IMAGE = noise(64, 80, seed=11)
CLIENTS = 16


def metrics(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    text = http.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_health_and_readiness(server: Server, binary_model: Path) -> None:
    assert httpx.get(f"{server.url}/health/live").json() == {"status": "live"}
    assert httpx.get(f"{server.url}/health/ready").json() == {"status": "ready"}
    health = httpx.get(f"{server.url}/health").json()
    provider, precision = default_engine(binary_model)
    assert health == {
        "status": "ready",
        "model": {"name": "binary", "version": "0.0.0"},
        "provider": provider,
        "precision": precision,
    }


def test_every_format_both_upload_styles(http: httpx.Client) -> None:
    raw = http.post("/segment", content=png(IMAGE))
    form = http.post("/segment", files={"file": ("x.png", png(IMAGE), "image/png")})
    assert raw.status_code == form.status_code == 200
    assert raw.content == form.content
    mask = np.asarray(Image.open(io.BytesIO(raw.content)))
    assert mask.shape == IMAGE.shape
    document = http.post("/segment?format=rle", content=png(IMAGE)).json()
    rle = document["segments"][0]["rle"]
    decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(decoded, mask)
    probability = http.post("/segment?format=probability&tta=true", content=png(IMAGE))
    assert np.asarray(Image.open(io.BytesIO(probability.content))).dtype == np.uint16
    frames = http.post("/segment?format=rle", content=tiff(IMAGE, IMAGE)).json()
    assert [s["frame"] for s in frames["segments"]] == [0, 1]
    assert http.post("/segment?format=png", content=tiff(IMAGE, IMAGE)).status_code == 422


def test_headers(http: httpx.Client) -> None:
    response = http.post("/segment", content=png(IMAGE), headers={"X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    assert response.headers["server-timing"].startswith("decode;dur=")
    error = http.post("/segment", content=b"", headers={"X-Request-ID": "req-43"})
    assert (error.status_code, error.headers["x-request-id"]) == (400, "req-43")


def test_auth(server: Server) -> None:
    url = f"{server.url}/segment"
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}]:
        response = httpx.post(url, content=png(IMAGE), headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert isinstance(response.json()["detail"], str)
    assert httpx.post(url, content=png(IMAGE), headers={"X-API-Key": API_KEY}).status_code == 200
    assert httpx.get(f"{server.url}/model", headers={"X-API-Key": "other-key"}).status_code == 200
    assert httpx.get(f"{server.url}/metrics").status_code == 200


def test_limits_and_the_bomb(http: httpx.Client) -> None:
    big = http.post("/segment", content=png(noise(1001, 1000)))  # 1 001 000 px > 1 000 000
    assert big.status_code == 413
    assert "UNET_MAX_IMAGE_PIXELS" in big.json()["detail"]
    assert http.post("/segment", content=png(noise(1000, 1000))).status_code == 200
    bomb = http.post("/segment", content=bad_corpus()["png bomb"][0])
    assert bomb.status_code == 413


def test_chunked_upload_over_the_limit_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield png(IMAGE)
        for _ in range(33):  # 33 x 64 KiB: past the 2 000 000-byte limit
            yield b"\0" * 65536

    response = http.post("/segment", content=chunks())
    assert response.status_code == 413
    assert "UNET_MAX_UPLOAD_BYTES" in response.json()["detail"]


def test_declared_length_over_the_limit_is_refused_before_the_body(server: Server) -> None:
    # Only the headers are sent: the answer must not wait for a gigabyte that never comes.
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as s:
        s.sendall(
            b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
            + f"X-API-Key: {API_KEY}\r\n\r\n".encode()
        )
        reply = s.recv(65536).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413")


def test_bad_corpus_leaves_the_server_healthy_without_memory_growth(
    server: Server, http: httpx.Client
) -> None:
    corpus = bad_corpus()
    process = psutil.Process(server.process.pid)

    def run_corpus() -> None:
        for name, (body, status) in corpus.items():
            response = http.post("/segment", content=body)
            assert response.status_code == status, (name, response.text)
            assert isinstance(response.json()["detail"], str)

    run_corpus()  # first round: allocator pools settle
    before = process.memory_info().rss
    for _ in range(5):
        run_corpus()
    growth = process.memory_info().rss - before
    assert growth < 32 << 20, f"RSS grew by {growth >> 20} MiB over 5 rounds of bad input"
    assert http.get("/health/ready").status_code == 200
    assert http.post("/segment", content=png(IMAGE)).status_code == 200


def test_metrics_parse_and_move(http: httpx.Client, binary_model: Path) -> None:
    before = metrics(http)
    assert http.post("/segment", content=png(IMAGE)).status_code == 200
    assert http.post("/segment", content=b"").status_code == 400
    after = metrics(http)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("unet_requests_total", endpoint="/segment", status="200") == 1
    assert delta("unet_requests_total", endpoint="/segment", status="400") == 1
    assert delta("unet_images_total", model="binary") == 1
    assert delta("unet_pixels_total", model="binary") == IMAGE.size
    assert delta("unet_tiles_total", model="binary") >= 1
    assert delta("unet_inference_duration_seconds_count", model="binary") == 1
    assert delta("unet_request_duration_seconds_count", endpoint="/segment") == 2
    info = (
        "unet_model_info",
        (
            ("model", "binary"),
            ("name", "binary"),
            ("provider", default_engine(binary_model)[0]),
            ("version", "0.0.0"),
        ),
    )
    assert after[info] == 1
    assert ("unet_requests_in_flight", ()) in after
    assert ("unet_requests_queued", ()) in after


def test_sixteen_concurrent_clients_match_sequential(http: httpx.Client, server: Server) -> None:
    images = [png(noise(64 + 8 * i, 96, seed=i)) for i in range(4)]
    sequential = [http.post("/segment?format=rle", content=body).content for body in images]

    def call(i: int) -> httpx.Response:
        headers = {"X-API-Key": API_KEY}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
            return c.post("/segment?format=rle", content=images[i % 4])

    with ThreadPoolExecutor(CLIENTS) as pool:
        responses = list(pool.map(call, range(CLIENTS), timeout=120))
    for i, response in enumerate(responses):
        assert response.status_code in (200, 503), response.text
        if response.status_code == 200:
            assert response.content == sequential[i % 4]
        else:
            assert int(response.headers["retry-after"]) >= 1
    assert any(r.status_code == 200 for r in responses)


def test_one_json_log_line_per_request_without_content(http: httpx.Client, server: Server) -> None:
    http.post("/segment?format=rle", content=png(IMAGE), headers={"X-Request-ID": "log-me"})
    mine = server.json_log(lambda line: line.get("request_id") == "log-me")
    assert len(mine) == 1
    entry = mine[0]
    assert entry["route"] == "/segment"
    assert entry["status"] == 200
    assert entry["model_version"] == "binary:0.0.0"
    assert entry["image"] == "80x64x1"
    assert {"bytes_in", "bytes_out", "duration_ms", "inference_ms"} <= set(entry)
    written = [line for line in server.log_lines() if line.startswith("{")]  # up to mine
    assert not [line for line in written if "uvicorn.access" in line]

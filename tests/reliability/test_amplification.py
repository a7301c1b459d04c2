"""Work amplification: a cheap request must not buy minutes of inference (API.md, "Cost").

Found by hand: a 1,048-byte PNG of 1,000,000 x 1 px cost 1,737 tiles (37.5 s),
a 1.1 MB TIFF of 10,000 pages of 1 x 1 px took 45 s. Both are refused from the
header now, before any pixel is decoded and before any tile runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.service import Service
from tests.conftest import Server
from tests.conftest import settings as app_settings
from tests.reliability.conftest import strip_png, tiny_pages
from tests.samples import png, tiff


def tiles_run(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "unet_tiles")
    return sum(sample.value for sample in family.samples if sample.name == "unet_tiles_total")


def test_a_thin_strip_is_refused_from_its_header(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    data = strip_png(1_000_000, 1)
    assert len(data) < 2000
    response = httpx.post(f"{server.url}/segment", content=data, timeout=60)
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "UNET_MAX_IMAGE_PIXELS" in detail
    assert "square" in detail
    assert tiles_run(server) == 0


@pytest.mark.parametrize(
    ("env", "named"),
    [({}, "UNET_MAX_FRAMES"), ({"UNET_MAX_FRAMES": "100000"}, "UNET_MAX_IMAGE_PIXELS")],
)
def test_ten_thousand_tiny_pages_are_refused_from_their_headers(
    server_factory: Callable[..., Server], env: dict[str, str], named: str
) -> None:
    server = server_factory(**env)
    response = httpx.post(
        f"{server.url}/segment?format=rle", content=tiny_pages(10_000), timeout=60
    )
    assert response.status_code == 413
    assert named in response.json()["detail"]
    assert tiles_run(server) == 0
    # The server is free at once for a normal request.
    assert httpx.post(f"{server.url}/segment", content=png(np.zeros((64, 64), np.uint8))).is_success


# -- the boundary, in-process (TestClient) ------------------------------------------------

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def small(model: Path) -> TestClient:
    app = create_app(app_settings(model, max_image_pixels=LIMIT, max_frames=3))
    with TestClient(app) as client:
        yield client  # type: ignore[misc]


def test_every_square_image_up_to_the_limit_is_served(small: TestClient) -> None:
    side = math.isqrt(LIMIT)
    assert small.post("/segment", content=png(np.zeros((side, side), np.uint8))).status_code == 200
    too_many = small.post("/segment", content=png(np.zeros((side, side + 1), np.uint8)))
    assert too_many.status_code == 413
    assert "UNET_MAX_IMAGE_PIXELS" in too_many.json()["detail"]


def test_tta_counts_four_times(small: TestClient) -> None:
    square = png(np.zeros((1024, 1024), np.uint8))
    refused = small.post("/segment?tta=true", content=square)
    assert refused.status_code == 413
    assert "with tta" in refused.json()["detail"]
    assert small.post("/segment?tta=true", content=png(np.zeros((256, 256), np.uint8))).is_success


def test_frames_are_limited(small: TestClient) -> None:
    page = np.zeros((8, 8), np.uint8)
    assert small.post("/segment?format=rle", content=tiff(page, page, page)).is_success
    refused = small.post("/segment?format=rle", content=tiff(page, page, page, page))
    assert refused.status_code == 413
    assert "UNET_MAX_FRAMES" in refused.json()["detail"]


@settings(max_examples=15, deadline=None)
@given(height=st.integers(1, 2048), width=st.integers(1, 2048), tta=st.booleans())
def test_the_answer_follows_the_work_estimate(
    small: TestClient, height: int, width: int, tta: bool
) -> None:
    """200 exactly when pixels <= limit and work <= what the square image costs, else 413."""
    service: Service = small.app.state.service  # type: ignore[attr-defined]
    fits = (
        height * width <= LIMIT and service.work.cost(width, height, 1, tta) <= service.work.budget
    )
    if height * width > 4 * LIMIT:
        return  # nothing new past this, and such PNGs take long to make
    response = small.post(f"/segment?tta={str(tta).lower()}", content=strip_png(width, height))
    assert response.status_code == (200 if fits else 413), response.text
    if not fits:
        assert "UNET_MAX_IMAGE_PIXELS" in response.json()["detail"]


def test_legitimate_shapes_pass_and_thin_strips_do_not(small: TestClient) -> None:
    service: Service = small.app.state.service  # type: ignore[attr-defined]
    for height, width in [(1024, 1024), (512, 2048), (700, 1400)]:
        assert service.work.cost(width, height, 1, False) <= service.work.budget
    for height, width in [(1, 1 << 20), (8, 1 << 17)]:
        assert service.work.cost(width, height, 1, False) > service.work.budget
        assert small.post("/segment", content=strip_png(width, height)).status_code == 413

"""``unet-segment``: folders and globs in, the service's exact bytes out, resume, failures."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import cli
from app.codecs.outputs import default_outputs
from app.pipeline.batch import Small
from app.pipeline.files import write_atomically
from tests.samples import noise, png, tiff, truncated

IMAGES = {
    "a.png": png(noise(60, 70, seed=1)),
    "b.png": png(noise(41, 33, seed=2)),
    "c.tif": tiff(noise(50, 50, seed=3), noise(50, 50, seed=4)),
}


def folder(tmp_path: Path, extra: dict[str, bytes] | None = None) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, data in {**IMAGES, **(extra or {})}.items():
        (inputs / name).write_bytes(data)
    (inputs / "notes.txt").write_text("not an image, not picked up from a folder")
    return inputs


def segment(model: Path, out: Path, *inputs: str | Path, **flags: object) -> int:
    argv = [str(i) for i in inputs] + ["--model", str(model), "--out", str(out), "--tile", "96"]
    for flag, value in flags.items():
        name = "--" + flag.replace("_", "-")
        argv += [name] if value is True else [name, str(value)]
    return cli.main(argv)


def summary(out: Path) -> dict[str, dict[str, object]]:
    rows = json.loads((out / "summary.json").read_text())
    return {Path(str(row["input"])).name: row for row in rows}


@pytest.mark.parametrize("output", ["png", "rle", "probability", "instances", "objects"])
def test_a_file_is_the_services_answer_byte_for_byte(
    output: str, binary_model: Path, client: TestClient, tmp_path: Path
) -> None:
    inputs = folder(tmp_path)
    out = tmp_path / "out"
    assert segment(binary_model, out, inputs / "a.png", format=output) == 0
    written = [p for p in out.iterdir() if p.name != "summary.json"]
    assert [p.name for p in written] == [f"a.{cli_extension(output)}"]
    answer = client.post(f"/segment?format={output}", content=IMAGES["a.png"])
    assert answer.status_code == 200
    assert written[0].read_bytes() == answer.content


def cli_extension(output: str) -> str:
    return next(o.extension for o in default_outputs() if o.name == output)


def test_a_folder_with_a_bad_file_does_the_rest_and_exits_1(
    binary_model: Path, tmp_path: Path
) -> None:
    inputs = folder(tmp_path, {"broken.png": truncated(IMAGES["a.png"])})
    out = tmp_path / "out"
    assert segment(binary_model, out, inputs, format="rle") == 1
    rows = summary(out)
    assert set(rows) == {"a.png", "b.png", "c.tif", "broken.png"}  # notes.txt is not an image
    assert rows["broken.png"]["status"] == "failed"
    assert "CorruptImageError" in str(rows["broken.png"]["error"])
    assert not (out / "broken.rle.json").exists()
    for name, frames in (("a.png", 1), ("b.png", 1), ("c.tif", 2)):
        row = rows[name]
        assert row["status"] == "ok"
        assert row["frames"] == frames
        written = Path(str(row["output"]))
        assert written.stat().st_size == row["bytes"]
        assert len(json.loads(written.read_text())["segments"]) == frames
    assert rows["a.png"]["width"] == 70
    assert rows["a.png"]["height"] == 60
    assert not list(out.glob("*.part"))


def test_a_rerun_skips_what_is_done_and_overwrite_redoes_it(
    binary_model: Path, tmp_path: Path
) -> None:
    inputs = folder(tmp_path)
    out = tmp_path / "out"
    assert segment(binary_model, out, inputs) == 1  # c.tif has 2 frames: png carries one
    first = (out / "b.png").read_bytes()
    (out / "a.png").write_bytes(b"left alone")
    assert segment(binary_model, out, inputs) == 1
    rows = summary(out)
    assert rows["a.png"]["status"] == rows["b.png"]["status"] == "skipped"
    assert (out / "a.png").read_bytes() == b"left alone"
    assert rows["c.tif"]["status"] == "failed"
    assert "FrameCountError" in str(rows["c.tif"]["error"])
    assert segment(binary_model, out, inputs / "a.png", overwrite=True) == 0
    assert (out / "a.png").read_bytes() != b"left alone"
    assert summary(out)["a.png"]["status"] == "ok"
    assert (out / "b.png").read_bytes() == first


def test_globs_and_repeated_inputs_each_count_once(binary_model: Path, tmp_path: Path) -> None:
    inputs = folder(tmp_path)
    out = tmp_path / "out"
    pattern = str(inputs / "*.png")
    assert segment(binary_model, out, pattern, inputs / "a.png", format="rle") == 0
    assert sorted(summary(out)) == ["a.png", "b.png"]


def test_nothing_found_is_exit_1(binary_model: Path, tmp_path: Path) -> None:
    assert segment(binary_model, tmp_path / "out", tmp_path / "missing-*.png") == 1


def test_an_input_that_names_nothing_fails_and_the_rest_is_done(
    binary_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, out = folder(tmp_path), tmp_path / "out"
    (tmp_path / "empty").mkdir()
    given = [inputs / "a.png", tmp_path / "typo.png", tmp_path / "empty", str(inputs / "*.jpg")]
    assert segment(binary_model, out, *given, format="rle") == 1
    rows = {str(row["input"]): row for row in json.loads((out / "summary.json").read_text())}
    assert rows[str(inputs / "a.png")]["status"] == "ok"
    said = capsys.readouterr().err
    for missing in given[1:]:
        assert rows[str(missing)]["status"] == "failed"
        assert "no such file" in str(rows[str(missing)]["error"])
        assert f"unet-segment: {missing}: no such file" in said
    assert sorted(p.name for p in out.iterdir()) == ["a.rle.json", "summary.json"]


def test_inputs_of_the_same_name_never_share_an_output(
    binary_model: Path, client: TestClient, tmp_path: Path
) -> None:
    """a/x.png and b/x.png both name DIR/x.png: the first is written, the second fails
    saying why -- never "skipped" with the first one's mask -- on a rerun too."""
    for where, seed in (("a", 1), ("b", 2)):
        (tmp_path / "in" / where).mkdir(parents=True)
        (tmp_path / "in" / where / "x.png").write_bytes(png(noise(40, 50, seed=seed)))
    out = tmp_path / "out"
    for status in ("ok", "skipped"):  # the second run: the first skipped, the second failed
        assert segment(binary_model, out, str(tmp_path / "in" / "**" / "*.png")) == 1
        first, second = json.loads((out / "summary.json").read_text())
        assert (first["input"][-7:], second["input"][-7:]) == ("a/x.png", "b/x.png")
        assert (first["status"], second["status"]) == (status, "failed")
        assert "its output x.png is that of" in second["error"]
    expected = client.post("/segment", content=(tmp_path / "in" / "a" / "x.png").read_bytes())
    assert (out / "x.png").read_bytes() == expected.content


def test_a_threshold_changes_the_mask_as_the_service_does(
    binary_model: Path, client: TestClient, tmp_path: Path
) -> None:
    inputs = folder(tmp_path)
    out = tmp_path / "out"
    assert segment(binary_model, out, inputs / "a.png", threshold=0.3) == 0
    answer = client.post("/segment?threshold=0.3", content=IMAGES["a.png"]).content
    assert (out / "a.png").read_bytes() == answer


def test_objects_outline_each_object_in_an_overlay_as_the_service_does(
    softmax_model: Path, softmax_client: TestClient, tmp_path: Path
) -> None:
    inputs = folder(tmp_path)
    out = tmp_path / "out"
    assert segment(softmax_model, out, inputs / "a.png", format="overlay", objects=True) == 0
    query, image = "/segment?format=overlay", IMAGES["a.png"]
    outlined = softmax_client.post(f"{query}&objects=true", content=image)
    filled = softmax_client.post(query, content=image)
    assert outlined.content != filled.content  # the flag changes the picture
    assert (out / f"a.{cli_extension('overlay')}").read_bytes() == outlined.content


BAD_ARGUMENTS = [
    ["--format", "jpeg"],
    ["--objects"],  # an overlay's option: without --format overlay it says so
    ["--threshold", "1.5"],
    ["--tile", "x"],
    ["--batch", "0"],
    ["--min-area", "-1"],
    ["--max-pixels", "0"],
    [],
]


@pytest.mark.parametrize("argv", BAD_ARGUMENTS)
def test_bad_arguments_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv + (["x.png"] if argv else []))
    assert exit_.value.code == 2
    assert "usage: unet-segment" in capsys.readouterr().err


def test_a_tile_below_the_models_minimum_is_exit_2(
    binary_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([str(folder(tmp_path)), "--model", str(binary_model), "--tile", "8"]) == 2
    assert "below the model's minimum input" in capsys.readouterr().err


def test_a_missing_model_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = folder(tmp_path)
    code = segment(tmp_path / "nope.onnx", tmp_path / "out", inputs)
    assert code == 2
    assert "nope.onnx" in capsys.readouterr().err


def test_ctrl_c_exits_130_keeping_finished_outputs(
    binary_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = folder(tmp_path)
    out = tmp_path / "out"
    real = Small.__call__

    def interrupted_at_b(self: Small, source: Path, tiles: Any) -> Any:
        if source.name == "b.png":
            raise KeyboardInterrupt
        return real(self, source, tiles)

    monkeypatch.setattr(Small, "__call__", interrupted_at_b)
    assert segment(binary_model, out, inputs) == 130
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "summary.json"]
    assert [row["status"] for row in summary(out).values()] == ["ok"]


def test_an_interrupted_write_leaves_neither_the_file_nor_a_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Interrupted(io.FileIO):
        def write(self, data: object) -> int:
            super().write(bytes(data)[:10])  # type: ignore[call-overload]
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Interrupted(fd, "wb"))
    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "x.png", b"0123456789" * 100)
    assert list(tmp_path.iterdir()) == []


def test_the_command_runs_as_a_program_with_progress_on_stderr(
    binary_model: Path, tmp_path: Path
) -> None:
    inputs = folder(tmp_path)
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            str(inputs / "b.png"),
            "--model",
            str(binary_model),
            "--out",
            str(out),
            "--format",
            "png",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "files" in run.stderr
    assert run.stdout == ""
    mask = np.asarray(Image.open(out / "b.png"))
    assert mask.shape == (41, 33)


def test_the_package_installs_the_command() -> None:
    (script,) = entry_points(group="console_scripts", name="unet-segment")
    assert script.load() is cli.main


def test_a_model_of_a_repository_by_name_is_that_file(
    binary_model: Path,
    softmax_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repository = tmp_path / "models"
    repository.mkdir()
    for model in (binary_model, softmax_model):
        (repository / model.name).write_bytes(model.read_bytes())
    inputs = folder(tmp_path)
    by_path, by_name = tmp_path / "path", tmp_path / "name"
    assert segment(softmax_model, by_path, inputs / "a.png", format="probability") == 0
    argv = [str(inputs / "a.png"), "--out", str(by_name), "--tile", "96", "--format", "probability"]
    assert cli.main([*argv, "--model-repository", str(repository), "--model-name", "softmax3"]) == 0
    assert (by_name / "a.prob.png").read_bytes() == (by_path / "a.prob.png").read_bytes()
    monkeypatch.setenv("UNET_MODEL_REPOSITORY", str(repository))
    monkeypatch.setenv("UNET_DEFAULT_MODEL", "softmax3")
    again = tmp_path / "env"
    assert cli.main([str(inputs / "a.png"), "--out", str(again), "--tile", "96",
                     "--format", "probability"]) == 0  # fmt: skip
    assert (again / "a.prob.png").read_bytes() == (by_path / "a.prob.png").read_bytes()
    monkeypatch.delenv("UNET_DEFAULT_MODEL")
    with pytest.raises(SystemExit) as exited:  # two models, none named: argparse's error
        cli.main([str(inputs / "a.png"), "--out", str(again)])
    assert exited.value.code == 2
    assert "several models and no name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([str(inputs / "a.png"), "--model-name", "liver"])
    assert "no model 'liver' (--model-name; the models: ['binary', 'softmax3'])" in (
        capsys.readouterr().err
    )

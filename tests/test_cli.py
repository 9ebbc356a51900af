"""The command line's own behaviour: help texts, what it says and when, and the one error boundary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import noise_image
from fakeface.checkpoint import load_checkpoint, save_atomic
from fakeface.onnx_runtime import read_metadata


def fakeface(*args):
    return subprocess.run([sys.executable, "-m", "fakeface", *map(str, args)], capture_output=True, text=True)


def copy_run(tiny_run, tmp_path):
    """A private copy of tiny_run's run folder (best.pt and its split), so exports made beside it stay here."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run[1], run / "best.pt")
    return run


def test_help_shows_square_brackets():
    res = fakeface("train", "--help")
    assert res.returncode == 0 and "fakeface[pretrained]" in res.stdout.replace("\n", "").replace(" ", "")


def test_predict_on_nothing_says_so_before_loading_any_model(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = fakeface("predict", empty, "--checkpoint", tmp_path / "no-such-run")
    assert res.returncode == 2 and "no files found" in res.stderr and "checkpoint" not in res.stderr


def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
    res = fakeface("evaluate", "--checkpoint", tmp_path / "missing.pt", "--data", tmp_path, "--out", tmp_path / "o")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1



def test_an_interrupted_command_says_so_in_one_line_with_the_interrupt_exit_code(tmp_path):
    """evaluate has no partial result to report: Ctrl-C or SIGTERM ends it with a line saying so and 130, as a
    shell expects of an interrupted program, whatever Typer does by itself (end silently, or print Click's
    'Aborted!' with the exit code of a failure)."""
    for label in ("real", "fake"):
        folder = tmp_path / "ds" / "test" / label
        folder.mkdir(parents=True)
        noise_image(7, 64).save(folder / "00000.jpg")
        for i in range(1, 1000):
            (folder / f"{i:05d}.jpg").hardlink_to(folder / "00000.jpg")
    proc = subprocess.Popen([sys.executable, "-m", "fakeface", "evaluate", "--data", tmp_path / "ds", "--out",
                             tmp_path / "eval", "--batch-size", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    said = proc.stderr.readline()  # the shipped detector is named once the command runs
    proc.terminate()
    out, err = proc.communicate(timeout=60)
    assert said.startswith("detector: ") and proc.returncode == 130, said + err
    assert err.strip() == "interrupted" and not (tmp_path / "eval" / "metrics.json").exists(), err

@pytest.mark.slow
def test_predict_makes_an_export_on_first_use_then_runs_it_quietly_as_asked(tiny_run, tmp_path):
    data, _ = tiny_run
    run = copy_run(tiny_run, tmp_path)
    few = fakeface("predict", "--checkpoint", run, data / "test" / "fake", "--json")  # 8: PyTorch, no export
    assert few.returncode == 0 and not (run / "best.onnx").exists() and "backend" not in few.stderr, few.stderr
    first = fakeface("predict", "--checkpoint", run, data, "--json")  # 48 images: worth an export
    assert first.returncode == 0, first.stderr
    assert f"made {run / 'best.onnx'}," in first.stderr and (run / "best.onnx").is_file()
    assert read_metadata(run / "best.onnx")["precision"] == "fp32"
    assert sorted(p.name for p in run.iterdir()) == ["best.onnx", "best.pt"]  # no temporary file left
    again = fakeface("predict", "--checkpoint", run, data / "test" / "fake", "--json")
    assert again.returncode == 0 and "backend" not in again.stderr  # its export, quietly: nothing asked, nothing new
    asked = fakeface("predict", "--checkpoint", run, data / "test" / "fake", "--json", "--backend", "onnx")
    assert asked.returncode == 0 and "backend: onnx (asked for: best.onnx" in asked.stderr
    # an export given by name runs as given: nothing about backends to say
    quiet = fakeface("predict", "--checkpoint", run / "best.onnx", data / "test" / "fake", "--json")
    assert quiet.returncode == 0 and "backend" not in quiet.stderr, quiet.stderr


@pytest.mark.slow
def test_export_says_what_it_checked_against_pytorch(tiny_run, tmp_path):
    data, _ = tiny_run
    run = copy_run(tiny_run, tmp_path)
    res = fakeface("export", "--checkpoint", run)  # the checkpoint records its data: its valid split is used
    assert res.returncode == 0, res.stderr
    assert "16 images of the run's validation split" in res.stdout, res.stdout
    res = fakeface("export", "--checkpoint", run, "--calibration-data", data)
    assert res.returncode == 0 and f"images of the valid split of {data}" in res.stdout, res.stdout
    # a checkpoint whose data is nowhere to be found: seeded noise, and it says so
    lost = tmp_path / "lost"
    ckpt = {k: v for k, v in load_checkpoint(run).items() if k != "path"}
    save_atomic({**ckpt, "data": str(tmp_path / "gone")}, lost / "best.pt")
    res = fakeface("export", "--checkpoint", lost)
    assert res.returncode == 0 and "random-noise images (no validation split of the run found)" in res.stdout


@pytest.mark.slow
def test_evaluate_shows_progress(tiny_run, tmp_path):
    data, best = tiny_run
    res = fakeface("evaluate", "--checkpoint", best, "--data", data, "--out", tmp_path / "ev", "--bootstrap", "0",
                   "--workers", "0")
    assert res.returncode == 0, res.stderr
    assert "scoring 16/16" in res.stderr


def test_export_folder_round_trips_and_predict_takes_it(tiny_run, tmp_path):
    data, best = tiny_run
    r = fakeface("export", "--checkpoint", best, "--format", "folder", "--dtype", "float32", "--out", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    image = next((data / "test").rglob("*.jpg"))
    rows = []
    for ckpt in (best, tmp_path / "m"):
        out = fakeface("predict", image, "--checkpoint", ckpt, "--json", "--backend", "pytorch")
        assert out.returncode == 0, out.stderr
        rows.append(json.loads(out.stdout.splitlines()[0])["p_fake"])
    assert abs(rows[0] - rows[1]) < 1e-6


def test_predict_without_checkpoint_uses_the_default(tiny_run):
    data, _ = tiny_run
    r = fakeface("predict", next((data / "test").rglob("*.jpg")), "--json")
    assert r.returncode == 0, r.stderr
    assert "shipped with fakeface" in r.stderr and r.stderr.count("detector:") == 1


def test_blank_image_with_faces_asked_is_no_face(tmp_path):
    from PIL import Image

    Image.new("RGB", (200, 200), (128, 128, 128)).save(tmp_path / "blank.png")
    r = fakeface("predict", tmp_path / "blank.png", "--detect-faces", "--json")
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["pred"] == "no_face"


def test_every_command_runs_the_shipped_default_without_a_checkpoint(tiny_run, tmp_path):
    import os
    import socket
    import time
    import urllib.error
    import urllib.request

    import yaml

    from fakeface.hub import read_config

    data, _ = tiny_run
    image = next((data / "test" / "fake").glob("*.jpg"))

    def ok(*args):
        r = fakeface(*args)
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("detector: fakeface-default") == 1, r.stderr  # named once, the shipped one
        return r

    ok("explain", image, "--out", tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 0
    ok("evaluate", "--data", data, "--split", "test", "--out", tmp_path / "eval", "--bootstrap", "0")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["images"]["scored"] == 16
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "tiny", "labelled": {"t": {"data": str(data), "split": "test"}},
                                     "real": {"r": {"images": str(data / "valid" / "real")}}}))
    ok("benchmark", "--suite", suite, "--out", tmp_path / "bench", "--bootstrap", "0")
    assert json.loads((tmp_path / "bench" / "benchmark.json").read_text())["detector"]["name"]
    # calibrate: the packaged folder is never rewritten; --out makes a model folder under the same release
    refused = fakeface("calibrate", "--data", data)
    assert refused.returncode == 2 and "model folder" in refused.stderr and "Traceback" not in refused.stderr
    ok("calibrate", "--data", data, "--policy", "fpr=0.1", "--out", tmp_path / "recal")
    config = read_config(tmp_path / "recal")
    assert config["threshold_policy"] == "fpr=0.1" and config["release"]["name"] == "fakeface-default"
    again = fakeface("predict", "--checkpoint", tmp_path / "recal", image, "--json")
    assert again.returncode == 0 and f"threshold {config['threshold']:.3f} (fpr=0.1)" in again.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fakeface", "serve", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    try:
        deadline = time.time() + 120
        while True:
            try:
                info = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/model", timeout=2))
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.time() < deadline, "server did not start"
                time.sleep(0.3)
        assert info["release"]["name"] == "fakeface-default"
    finally:
        proc.terminate()
        logs = proc.communicate(timeout=30)[0]
    assert logs.count("detector: fakeface-default") == 1, logs

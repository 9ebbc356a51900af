"""fakeface.report: file round trips, every plot is a real PNG, the HTML report shows all it is given."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from fakeface.metrics import bootstrap_ci, compute_metrics
from fakeface.report import (
    PLOT_FILES,
    format_number,
    plot_confusion,
    plot_examples,
    plot_pr,
    plot_reliability,
    plot_roc,
    plot_score_histogram,
    plot_training_curves,
    read_epoch_log,
    read_predictions,
    redraw_run,
    select_examples,
    write_predictions,
    write_report,
)

MIN_PNG_BYTES = 8_000  # an empty 600x450 canvas is ~3 KB; axes, text and curves push a plot well past this

LOG_CSV = """epoch,train_loss,train_acc,val_loss,val_acc,val_auc,lr,seconds,images_per_s
1,0.69,0.52,0.68,0.55,0.58,0.001,12.5,80.1
2,0.55,0.71,0.60,0.66,,0.0009,12.1,82.6
3,0.41,0.81,0.52,0.74,nan,0.0007,12.3,81.3
4,0.33,0.86,0.47,0.79,0.86,0.0004,12.0,83.0
"""


def synthetic(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.18), 0.0, 1.0)
    return y, p


def assert_png(path, min_bytes=MIN_PNG_BYTES):
    assert path.is_file(), path
    assert path.stat().st_size > min_bytes, f"{path.name} is only {path.stat().st_size} bytes"
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width >= 300 and img.height >= 250
        # not a blank canvas: a real plot has many colours
        assert len(img.convert("RGB").getcolors(maxcolors=1_000_000)) > 20


def prediction_rows(tmp_path, y, p, image_paths=None):
    names = ("real", "fake")
    return [
        {
            "path": str(image_paths[i % len(image_paths)]) if image_paths else f"img/{i:04d}.png",
            "label": names[int(yi)],
            "p_fake": float(pi),
            "pred": names[int(pi >= 0.5)],
        }
        for i, (yi, pi) in enumerate(zip(y, p, strict=True))
    ]


def write_run(run_dir, with_eval=True):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "log.csv").write_text(LOG_CSV)
    if with_eval:
        y, p = synthetic()
        write_predictions(run_dir / "predictions.csv", prediction_rows(run_dir, y, p))
        (run_dir / "metrics.json").write_text(json.dumps(compute_metrics(y, p)))
    return run_dir


def test_read_epoch_log(tmp_path):
    (tmp_path / "log.csv").write_text(LOG_CSV)
    rows = read_epoch_log(tmp_path / "log.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["train_loss"] == pytest.approx(0.69) and rows[3]["lr"] == pytest.approx(0.0004)
    assert rows[1]["val_auc"] is None and rows[2]["val_auc"] is None  # empty and NaN


def test_predictions_round_trip(tmp_path):
    rows = [
        {"path": "a/1.png", "label": "fake", "p_fake": 0.123456789012345, "pred": "real"},
        {"path": "b,with comma.png", "label": None, "p_fake": np.float32(0.9), "pred": "fake"},
        {"path": "c.png", "label": 0, "p_fake": 0.0, "pred": 0, "extra": "ignored"},
    ]
    path = write_predictions(tmp_path / "out" / "predictions.csv", iter(rows))
    assert path == tmp_path / "out" / "predictions.csv"
    assert path.read_text().splitlines()[0] == "path,label,p_fake,pred"
    assert [p.name for p in path.parent.iterdir()] == ["predictions.csv"]  # no temporary file left behind
    back = read_predictions(path)
    assert [r["path"] for r in back] == ["a/1.png", "b,with comma.png", "c.png"]
    assert [r["label"] for r in back] == ["fake", None, "real"]
    assert [r["pred"] for r in back] == ["real", "fake", "real"]
    assert back[0]["p_fake"] == 0.123456789012345  # exact, not rounded
    assert back[1]["p_fake"] == pytest.approx(0.9)

    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,p_fake,pred\nx.png,maybe,0.5,fake\n")
    with pytest.raises(ValueError, match="label"):
        read_predictions(bad)


def test_every_plot_is_a_png(tmp_path):
    (tmp_path / "log.csv").write_text(LOG_CSV)
    y, p = synthetic()
    m = compute_metrics(y, p)
    paths = plot_training_curves(tmp_path / "log.csv", tmp_path / "plots")
    assert [x.name for x in paths] == ["loss.png", "accuracy.png"]
    paths += [
        plot_roc(y, p, tmp_path / "roc.png"),
        plot_pr(y, p, tmp_path / "pr.png"),
        plot_confusion(m["confusion_matrix"], tmp_path / "confusion.png"),
        plot_confusion(m["confusion_matrix"]["matrix"], tmp_path / "confusion_list.png"),
        plot_score_histogram(y, p, 0.5, tmp_path / "hist.png"),
        plot_reliability(y, p, tmp_path / "reliability.png"),
        plot_reliability(y, p, tmp_path / "reliability_after.png", p_fake_after=np.clip(p * 0.8 + 0.1, 0, 1)),
        plot_roc(np.zeros(10, int), np.linspace(0, 1, 10), tmp_path / "roc_one_class.png"),
    ]
    for path in paths:
        assert_png(path)
    assert all(p.stat().st_size < 2_000_000 for p in paths)


def test_select_examples():
    y, p = synthetic(n=200, seed=1)
    rows = prediction_rows(None, y, p) + [{"path": "u.png", "label": None, "p_fake": 0.99, "pred": "fake"}]
    wrong = [r for r in rows if r["label"] and r["label"] != r["pred"]]
    assert len(wrong) > 8

    picked = select_examples(rows, n=16)
    assert len(picked) == 16
    assert all(r["label"] is not None for r in picked)
    most_confident_wrong = sorted(wrong, key=lambda r: abs(r["p_fake"] - 0.5), reverse=True)[:3]
    assert all(any(r is w for r in picked) for w in most_confident_wrong)
    correct = [r for r in picked if r["label"] == r["pred"]]
    assert {r["label"] for r in correct} == {"real", "fake"}

    only_right = [r for r in rows if r["label"] == r["pred"]]
    assert len(select_examples(only_right, n=6)) == 6
    few = select_examples(rows[:3], n=16)  # fewer rows than places: every labelled row, each once
    assert len(few) == 3 and all(any(r is f for f in few) for r in rows[:3])


def test_plot_examples_with_an_unreadable_file(tmp_path):
    images = []
    for i, color in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        path = tmp_path / f"face{i}.png"
        Image.new("RGB", (48, 40), color).save(path)
        images.append(path)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    rows = [
        {"path": str(images[0]), "label": "real", "p_fake": 0.1, "pred": "real"},
        {"path": str(images[1]), "label": "real", "p_fake": 0.93, "pred": "fake"},
        {"path": str(images[2]), "label": None, "p_fake": 0.7, "pred": "fake"},
        {"path": str(corrupt), "label": "fake", "p_fake": 0.6, "pred": "fake"},
        {"path": str(tmp_path / "missing.png"), "label": "fake", "p_fake": 0.2, "pred": "real"},
    ]
    path = plot_examples(rows, tmp_path / "examples.png", cols=3)
    assert_png(path)
    with Image.open(path) as img:
        assert img.width > img.height  # 3 columns, 2 rows


def walk_numbers(tree, path=()):
    """(key path, number) for every numeric leaf of a nested dict / list."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from walk_numbers(v, (*path, k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from walk_numbers(v, (*path, i))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def test_format_number():
    assert format_number(None) == "n/a"
    assert format_number(3) == "3" and format_number(np.int64(12)) == "12"
    assert format_number(0.91234567) == "0.9123" and format_number(np.float32(0.5)) == "0.5000"
    assert format_number(0.0) == "0.0000"
    assert format_number(2.5e-5) == "2.500e-05"
    assert format_number(float("nan")) == "nan"


def test_write_report_shows_everything(tmp_path):
    y, p = synthetic()
    metrics = compute_metrics(y, p)
    metrics["bootstrap"] = bootstrap_ci(y, p, n_boot=30)
    metrics["robustness"] = {
        "jpeg_q50": {"accuracy": 0.7777, "roc_auc": 0.8181},
        "blur_2": {"accuracy": 0.6123},
    }
    metrics["skipped"] = [{"path": "bad <file>.png", "reason": "corrupt or truncated image"}]
    metrics["calibration_temperature"] = 1.73
    plots = {
        "roc": plot_roc(y, p, tmp_path / "roc.png"),
        "confusion": plot_confusion(metrics["confusion_matrix"], tmp_path / "confusion.png"),
    }
    description = {
        "model": "tiny_cnn",
        "parameters": 123457,
        "data": {"test images": 120, "source": "synthetic"},
    }
    command = (
        'fakeface evaluate --checkpoint "runs/a b/best.pt" --data data/test --threshold 0.5 && echo <done>'
    )

    path = write_report(tmp_path / "out", metrics, plots, description, command, title="Report <test>")
    assert path == tmp_path / "out" / "report.html"
    page = path.read_text(encoding="utf-8")

    leaves = list(walk_numbers(metrics))
    assert len(leaves) > 40
    for key_path, value in leaves:
        assert format_number(value) in page, (key_path, value)
    for key in ("per_class", "macro", "confusion_matrix", "bootstrap", "robustness", "jpeg_q50", "skipped"):
        assert f">{key}<" in page, key
    assert "bad &lt;file&gt;.png" in page and "<file>" not in page
    assert "tiny_cnn" in page and "123457" in page and "synthetic" in page

    pre = re.search(r"<pre>(.*?)</pre>", page, re.S).group(1)
    assert pre == (
        "fakeface evaluate --checkpoint &quot;runs/a b/best.pt&quot; --data data/test --threshold 0.5 "
        "&amp;&amp; echo &lt;done&gt;"
    )
    assert "<title>Report &lt;test&gt;</title>" in page

    assert page.count("data:image/png;base64,") == len(plots)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing loaded from outside the page


def test_redraw_run(tmp_path):
    run = write_run(tmp_path / "run")
    written = redraw_run(run)
    names = {p.name for p in written}
    expected = {
        PLOT_FILES[k]
        for k in ("loss", "accuracy", "roc", "pr", "confusion", "score_histogram", "reliability")
    }
    assert expected | {"report.html"} <= names
    for path in written:
        assert path.parent == run
        if path.suffix == ".png":
            assert_png(path)

    # Re-drawing replaces the plots: delete and modify, then redraw again.
    (run / "loss.png").unlink()
    (run / "roc.png").write_bytes(b"stale")
    redraw_run(run)
    assert_png(run / "loss.png")
    assert_png(run / "roc.png")
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(expected)
    assert format_number(json.loads((run / "metrics.json").read_text())["roc_auc"]) in page

    train_only = write_run(tmp_path / "train_only", with_eval=False)
    assert {p.name for p in redraw_run(train_only)} == {"loss.png", "accuracy.png"}
    assert not (train_only / "report.html").exists()


def test_redraw_run_without_files_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="log.csv"):
        redraw_run(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        redraw_run(tmp_path / "does-not-exist")


def test_a_synthetic_detectors_report_says_so_first_and_once(tmp_path):
    metrics = {"data_kind": "synthetic", "data_note": "SYNTHETIC DATA: textures, not faces.", "accuracy": 0.9}
    html = write_report(tmp_path, metrics, {}, {}, "cmd").read_text()
    assert html.count('600">SYNTHETIC DATA: textures, not faces.</p>') == 1 and "<title>SYNTHETIC DATA - " in html
    assert html.index("SYNTHETIC DATA: textures") < html.index("<h1>")
    assert "SYNTHETIC" not in write_report(tmp_path / "plain", {"accuracy": 0.9}, {}, {}, "cmd").read_text()

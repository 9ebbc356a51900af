"""fakeface.benchmark: a suite of named sets scored once, every metric as scikit-learn computes it, the result file
read back, and the table in the model card and the HTML report."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, recall_score, roc_auc_score, roc_curve

from conftest import REPO, make_folder_dataset
from fakeface.benchmark import (
    FILES,
    KIND_MEASURES,
    SuiteError,
    benchmark_table_markdown,
    read_benchmark,
    read_suite,
    run,
    run_benchmark,
)
from fakeface.detector import load_detector
from fakeface.metrics import bootstrap_ci

N_BOOT = 200


def write_suite(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tiny_suite(tmp_path) -> Path:
    """A labelled set (test split, 6 + 6), a generator's 6 fakes against its reals, and 6 other reals. Paths are
    relative to the suite file except the real-only set's, which is absolute."""
    sets = tmp_path / "sets"
    make_folder_dataset(sets / "lab", per_class=6, size=96, splits=("test",))
    make_folder_dataset(sets / "gen", per_class=6, size=96, splits=("other",), class_dirs=("fake",))
    make_folder_dataset(sets / "photos", per_class=6, size=96, splits=("more", "again"), class_dirs=("real",))
    return write_suite(tmp_path / "suites" / "tiny.yaml", f"""
name: tiny
labelled:
  lab: {{data: ../sets/lab, split: Testing}}
generators:
  gen: {{fakes: ../sets/gen/other/fake, reals: lab}}
real:
  photos: {{images: {sets / 'photos'}}}
""")


def scores_of(out: Path) -> dict[str, float]:
    with open(out / FILES["scores"], newline="") as f:
        return {r["path"]: float(r["p_fake"]) for r in csv.DictReader(f)}


def labelled_scores(paths_labels: list[tuple[str, int]], scores: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([y for _, y in paths_labels]), np.array([scores[p] for p, _ in paths_labels])


def images(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.jpg"))


def test_every_metric_as_sklearn_computes_it(tiny_run, tiny_suite, tmp_path):
    _, ckpt = tiny_run
    detector = load_detector(ckpt)
    done = []
    result = run_benchmark(detector, tiny_suite, tmp_path / "out", n_boot=N_BOOT,
                           progress=lambda n, total: done.append((n, total)))
    out, t = tmp_path / "out", detector.threshold
    sets = {s["name"]: s for s in result["sets"]}
    assert [s["kind"] for s in result["sets"]] == ["labelled", "generator", "real"]
    # each image once: the labelled set's reals, which the generator set shares, are not scored twice
    assert result["images"] == 12 + 6 + 12 == sum(n for n, _ in done)
    assert {total for _, total in done} == {30}
    scores = scores_of(out)
    assert len(scores) == 30

    sets_dir = tiny_suite.parent.parent / "sets"
    lab_reals = images(sets_dir / "lab" / "test" / "real")
    cases = {
        "lab": [(p, 0) for p in lab_reals] + [(p, 1) for p in images(sets_dir / "lab" / "test" / "fake")],
        "gen": [(p, 0) for p in lab_reals] + [(p, 1) for p in images(sets_dir / "gen")],
        "photos": [(p, 0) for p in images(sets_dir / "photos")],
    }
    for name, paths_labels in cases.items():
        y, p = labelled_scores(paths_labels, scores)
        got = sets[name]
        assert (got["n_real"], got["n_fake"], got["skipped"]) == (int((y == 0).sum()), int((y == 1).sum()), 0)
        assert set(got["metrics"]) == set(KIND_MEASURES[got["kind"]])
        pred = (p >= t).astype(int)
        expected = {"fpr_at_threshold": float(pred[y == 0].mean())}
        if name != "photos":
            fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
            expected |= {"roc_auc": roc_auc_score(y, p), "average_precision": average_precision_score(y, p),
                         "tpr_at_threshold": recall_score(y, pred), "accuracy": accuracy_score(y, pred),
                         "tpr_at_fpr_1": tpr[fpr <= 0.01].max(), "tpr_at_fpr_5": tpr[fpr <= 0.05].max()}
        for key, value in got["metrics"].items():
            assert value == pytest.approx(expected[key], abs=1e-9), (name, key)
        for key, interval in got["intervals"].items():
            low, high = interval
            assert 0 <= low <= high <= 1, (name, key)
        # the false-positive rate's interval is the reals' accuracy interval turned round
        ci = bootstrap_ci(y, p, t, metrics=["real_accuracy"], n_boot=N_BOOT)["real_accuracy"]
        if "fpr_at_threshold" in got["intervals"]:
            assert got["intervals"]["fpr_at_threshold"] == pytest.approx([1 - ci[1], 1 - ci[0]])
    assert sets["gen"]["roc"] is not None and sets["photos"]["roc"] is None

    assert (out / FILES["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / FILES["markdown"]).read_text()
    assert "| lab | labelled |" in table and "| photos | reals only |" in table
    assert f"{sets['photos']['metrics']['fpr_at_threshold']:.3f}" in table
    assert read_benchmark(out / FILES["json"]) == json.loads((out / FILES["json"]).read_text())


def test_missing_and_empty_sets_refused_before_anything_is_loaded(tiny_suite, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    suite = write_suite(tmp_path / "bad.yaml", f"""
labelled:
  lab: {{data: {tiny_suite.parent.parent / 'sets' / 'lab'}}}
generators:
  gone: {{fakes: no/such/folder, reals: lab}}
real:
  empty: {{images: empty}}
""")
    # the checkpoint does not exist either: the suite's error comes first, before any model is loaded
    with pytest.raises(SuiteError) as e:
        run([tmp_path / "missing.pt"], suite, tmp_path / "out")
    message = str(e.value)
    assert "2 set(s)" in message and "'gone'" in message and "does not exist" in message
    assert "'empty'" in message and "no images in" in message and "'lab'" not in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, says", [
    ("labelled:\n  lab: {data: ../sets/lab, splt: test}\n", "splt"),  # a misspelt key
    ("generators:\n  g: {fakes: ../sets/gen/other/fake, reals: nowhere}\n", "'nowhere' is not a labelled or real"),
    ("labelled:\n  lab: {data: ../sets/lab, split: valid}\n", "no 'valid' split"),
    ("labelled:\n  lab: {data: ../sets/gen/other}\n", "needs real and fake"),
    ("labelled:\n  x: {data: ../sets/lab}\nreal:\n  x: {images: ../sets/photos}\n", "used in two sections"),
    ("name: [unclosed\n", "cannot read"),
    ("{}\n", "names no sets"),
    ("- a list\n", "expected labelled:"),
])
def test_bad_suites_get_one_clear_error(tiny_suite, text, says):
    with pytest.raises(SuiteError, match="benchmark suite") as e:
        read_suite(write_suite(tiny_suite.parent / "bad.yaml", text))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_list_file_names_part_of_a_folder(tiny_suite):
    """A generator's fakes and a real set's images may be a list file: just the images it names, relative to the
    list or absolute, blank lines and comments skipped, one image named twice scored once."""
    sets = tiny_suite.parent.parent / "sets"
    fakes = images(sets / "gen" / "other" / "fake")
    photos = images(sets / "photos")
    (sets / "lists").mkdir()
    (sets / "lists" / "held-out.txt").write_text(
        "# the fakes nobody trained on\n\n../gen/other/fake/" + Path(fakes[1]).name + "\n" + fakes[3] + "\n"
        + fakes[3] + "\n")
    (sets / "lists" / "photos.txt").write_text("\n".join(photos[:2]) + "\n")
    suite = read_suite(write_suite(tiny_suite.parent / "listed.yaml", """
labelled:
  lab: {data: ../sets/lab}
generators:
  gen: {fakes: ../sets/lists/held-out.txt, reals: lab}
real:
  photos: {images: ../sets/lists/photos.txt}
"""))
    sets_ = {s.name: s for s in suite.sets}
    assert sorted(s.path for s in sets_["gen"].samples if s.label == 1) == [fakes[1], fakes[3]]
    assert len([s for s in sets_["gen"].samples if s.label == 0]) == 6  # the labelled set's reals, as before
    assert [s.path for s in sets_["photos"].samples] == photos[:2]


def test_a_list_naming_missing_or_unreadable_files_is_refused(tiny_suite):
    lists = tiny_suite.parent / "lists"
    lists.mkdir()
    (lists / "gone.txt").write_text("../../sets/gen/other/fake/nope.jpg\n" + images(
        tiny_suite.parent.parent / "sets" / "gen")[0] + "\n")
    (lists / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 8)
    with pytest.raises(SuiteError) as e:
        read_suite(write_suite(tiny_suite.parent / "bad-lists.yaml", """
labelled:
  lab: {data: ../sets/lab}
generators:
  gen: {fakes: lists/gone.txt, reals: lab}
real:
  photos: {images: lists/binary.txt}
"""))
    message = str(e.value)
    assert "2 set(s)" in message and "1 of the 2 images listed" in message and "nope.jpg" in message
    assert "'photos': cannot read the list" in message and "\n" not in message


def test_missing_suite_file(tmp_path):
    with pytest.raises(SuiteError, match="not found"):
        read_suite(tmp_path / "nope.yaml")


def test_onnx_detector_scores_like_its_checkpoint(tiny_run, tiny_suite, tmp_path):
    from fakeface.export import export_onnx

    _, ckpt = tiny_run
    onnx = tmp_path / "tiny.onnx"
    export_onnx(ckpt, onnx)
    result = run([onnx], tiny_suite, tmp_path / "onnx", n_boot=0)
    assert result["detector"]["runtime"].startswith("onnxruntime")
    torch_result = run([ckpt], tiny_suite, tmp_path / "torch", n_boot=0)
    for got, want in zip(result["sets"], torch_result["sets"]):
        assert got["intervals"] == dict.fromkeys(KIND_MEASURES[got["kind"]])  # n_boot=0: no intervals
        assert (got["name"], got["n_real"], got["n_fake"]) == (want["name"], want["n_real"], want["n_fake"])
        assert set(got["metrics"]) == set(want["metrics"])
    # the same images through the exported graph: the same probabilities (a tiny model's near-ties may reorder,
    # so its ROC-AUC is not compared)
    onnx_scores, torch_scores = scores_of(tmp_path / "onnx"), scores_of(tmp_path / "torch")
    assert onnx_scores.keys() == torch_scores.keys()
    assert max(abs(onnx_scores[p] - torch_scores[p]) for p in torch_scores) < 1e-3


def test_ensemble_and_run_folder(tiny_run, tiny_suite, tmp_path):
    # a run folder of its own: the shared one may hold an export by now, which the folder would choose
    folder = tmp_path / "folder"
    folder.mkdir()
    ckpt = Path(shutil.copy(tiny_run[1], folder / "best.pt"))
    single = run([folder], tiny_suite, tmp_path / "run", n_boot=0)  # a run folder: its best.pt
    assert single["detector"]["path"] == str(ckpt)
    pair = run([ckpt, ckpt], tiny_suite, tmp_path / "pair", n_boot=0)
    assert pair["detector"]["name"].startswith("ensemble(")
    # the mean of two identical members is the member
    assert scores_of(tmp_path / "pair") == pytest.approx(scores_of(tmp_path / "run"))


def test_broken_result_files_refused(tiny_run, tiny_suite, tmp_path):
    _, ckpt = tiny_run
    result = run([ckpt], tiny_suite, tmp_path / "out", n_boot=0)
    good = json.loads((tmp_path / "out" / FILES["json"]).read_text())
    assert good["schema_version"] == 1 and good == read_benchmark(tmp_path / "out" / FILES["json"]) == result

    def refused(text: str, says: str):
        path = tmp_path / "broken.json"
        path.write_text(text)
        with pytest.raises(ValueError, match=says):
            read_benchmark(path)

    refused(json.dumps(good)[:200], "not a benchmark.json")  # cut short
    refused("[1, 2]", "no schema_version")
    refused(json.dumps({**good, "schema_version": 99}), "schema version 99")
    no_auc = json.loads(json.dumps(good))
    del no_auc["sets"][1]["metrics"]["roc_auc"]
    refused(json.dumps(no_auc), "'gen'.*roc_auc")
    too_big = json.loads(json.dumps(good))
    too_big["sets"][2]["metrics"]["fpr_at_threshold"] = 3.0
    refused(json.dumps(too_big), "outside")
    refused(json.dumps({k: v for k, v in good.items() if k != "detector"}), "detector")
    with pytest.raises(ValueError, match="no such file"):
        read_benchmark(tmp_path / "absent.json")


def test_card_and_report_show_the_table(tiny_run, tiny_suite, tmp_path):
    from fakeface.card import write_card
    from fakeface.report import write_report

    _, ckpt = tiny_run
    run_dir = tmp_path / "run"
    shutil.copytree(ckpt.parent, run_dir)  # the shared run stays untouched
    result = run([run_dir], tiny_suite, run_dir / "benchmark", n_boot=50)
    (run_dir / "old").mkdir()
    (run_dir / "old" / FILES["json"]).write_text("{ broken")  # skipped, with a note, not an error
    table = benchmark_table_markdown(result)

    card = write_card(run_dir).read_text()
    assert "### Benchmark `tiny`" in card and table in card

    page = write_report(run_dir / "eval-test", {"accuracy": 0.5}, {}, {}, "cmd").read_text()
    assert "Benchmark tiny" in page and "fakes caught at threshold" in page
    for s in result["sets"]:
        assert f"<th>{s['name']}</th>" in page
    bare = write_report(tmp_path / "elsewhere", {"accuracy": 0.5}, {}, {}, "cmd").read_text()
    assert "Benchmark" not in bare


def test_shipped_suite_names_sets_that_exist(sample_root):
    suite = read_suite(REPO / "configs" / "benchmarks" / "shared.yaml")
    sets = {s.name: s for s in suite.sets}
    assert {name: s.kind for name, s in sets.items()} == {"sample-test": "labelled", "stylegan2": "generator",
                                                          "unsplash": "real"}
    test_split = sets["sample-test"].samples
    assert all(Path(s.path).is_relative_to(sample_root) for s in test_split)
    assert {s.label for s in test_split} == {0, 1}
    reals = [s for s in test_split if s.label == 0]
    generator = sets["stylegan2"].samples
    assert [s for s in generator if s.label == 0] == reals  # against the same test reals
    assert all("cross-generator/stylegan2/fake" in s.path for s in generator if s.label == 1)
    assert sets["unsplash"].samples and all(s.label == 0 for s in sets["unsplash"].samples)


def test_unreadable_images_are_counted_and_named(tiny_run, tmp_path):
    _, ckpt = tiny_run
    photos = make_folder_dataset(tmp_path / "photos", per_class=4, size=96, splits=("",), class_dirs=("real",))
    (photos / "real" / "broken.jpg").write_bytes(b"not a jpeg")
    suite = write_suite(tmp_path / "s.yaml", "real:\n  photos: {images: photos}\n")
    result = run([ckpt], suite, tmp_path / "out", n_boot=0)
    (photos_result,) = result["sets"]
    assert (photos_result["n_real"], photos_result["skipped"]) == (4, 1)
    assert photos_result["skipped_examples"][0]["path"].endswith("broken.jpg")
    assert "(1 unreadable)" in benchmark_table_markdown(result)
    (photos / "real" / "000.jpg").unlink()  # now every image but the broken one is gone
    for name in ("001.jpg", "002.jpg", "003.jpg"):
        (photos / "real" / name).unlink()
    with pytest.raises(ValueError, match="none of its 1 images could be read.*broken.jpg"):
        run([ckpt], suite, tmp_path / "again", n_boot=0)

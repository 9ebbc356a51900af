"""``fakeface benchmark``: one detector scored on a suite of named sets - in-domain, unseen generators, other reals.

A suite is a YAML file naming three kinds of set (paths relative to the suite file, or absolute)::

    labelled:            # any --data form discover() reads, at one split: the usual detection metrics
      sample-test: {data: ../../../shared/data/faces140k-sample, split: test}
    generators:          # fakes of one generator, against the reals of a named set (the same kind of photo)
      stylegan2: {fakes: ../../../shared/data/cross-generator/stylegan2/fake, reals: sample-test}
    real:                # real photos only: how often they are flagged
      unsplash: {images: ../../../shared/data/cross-generator/unsplash/real}

``fakes`` and ``images`` name a folder (every image under it) or a list file (one image path a line, relative to
the list): a list keeps a benchmark to the part of a folder a detector never trained on.

:func:`read_suite` checks every set (present, readable, not empty) before anything is scored; each image is
then scored once however many sets hold it. :func:`run_benchmark` writes ``benchmark.json`` (read back by
:func:`read_benchmark`), ``benchmark.md`` and ``benchmark.png``; :func:`run` is the whole command, detector
loading included.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sklearn.metrics import roc_curve

from . import FAKE, REAL, __version__
from .data import SPLIT_ALIASES, DataError, Sample, class_counts, discover, read_path_list
from .detector import load_detector  # the one place this module gets its detectors from
from .figures import COLORS, new_figure, save_figure
from .files import write_text_atomic
from .images import is_image_file
from .metrics import bootstrap_ci, compute_metrics
from .predict import expand_inputs, predict_paths
from .text import fmt, md_table

SCHEMA_VERSION = 1
FILES = {"json": "benchmark.json", "markdown": "benchmark.md", "plot": "benchmark.png", "scores": "scores.csv"}
CONFIDENCE = 0.95

# What is measured on each kind of set: our name -> the name metrics.compute_metrics / bootstrap_ci use. The false
# positive rate is the complement of real_accuracy (the share of reals predicted real).
MEASURES = {
    "accuracy": "accuracy",
    "roc_auc": "roc_auc",
    "average_precision": "average_precision",
    "tpr_at_threshold": "recall",
    "fpr_at_threshold": "real_accuracy",
    "tpr_at_fpr_1": "tpr_at_fpr_1",
    "tpr_at_fpr_5": "tpr_at_fpr_5",
}
KIND_MEASURES = {
    "labelled": tuple(MEASURES),
    "generator": ("roc_auc", "average_precision", "tpr_at_threshold", "tpr_at_fpr_1", "tpr_at_fpr_5"),
    "real": ("fpr_at_threshold",),
}
# Table columns: our name -> header
COLUMNS = {
    "roc_auc": "ROC-AUC",
    "average_precision": "AP",
    "accuracy": "accuracy",
    "tpr_at_threshold": "fakes caught at threshold",
    "fpr_at_threshold": "reals flagged at threshold",
    "tpr_at_fpr_1": "TPR @ 1 % FPR",
    "tpr_at_fpr_5": "TPR @ 5 % FPR",
}


class SuiteError(DataError):
    """A suite that cannot be benchmarked; the message names the suite file and every set at fault."""


# -- the suite ------------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silently ignored setting


class LabelledSpec(_Strict):
    data: str
    split: str | None = None  # default: "test" when the data has one, else its only split


class GeneratorSpec(_Strict):
    fakes: str
    reals: str  # the name of a labelled or real set of this suite


class RealSpec(_Strict):
    images: str


class SuiteSpec(_Strict):
    name: str | None = None
    description: str | None = None
    labelled: dict[str, LabelledSpec] = Field(default_factory=dict)
    generators: dict[str, GeneratorSpec] = Field(default_factory=dict)
    real: dict[str, RealSpec] = Field(default_factory=dict)


@dataclass(frozen=True)
class BenchmarkSet:
    """One named set, resolved to its images: ``samples`` are labelled ``REAL`` / ``FAKE``."""

    name: str
    kind: Literal["labelled", "generator", "real"]
    source: dict[str, str]
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class Suite:
    path: Path
    name: str
    description: str | None
    sets: tuple[BenchmarkSet, ...]

    def image_paths(self) -> list[str]:
        """Every image of the suite once, in the order the sets name them."""
        return list(dict.fromkeys(s.path for bset in self.sets for s in bset.samples))


def _one_line(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'top level'}: {err['msg']}" for err in e.errors())


def _images_in(folder: Path) -> list[str]:
    """The image files under ``folder`` (recursively, sorted, hidden files skipped)."""
    return [p for p in expand_inputs([folder]) if is_image_file(p)]


def _listed_images(list_file: Path, problem: Callable[[str], None]) -> list[str] | None:
    """The images a list file names (:func:`fakeface.data.read_path_list`): a part of a folder, e.g. the images a
    detector was not trained on. Every listed file must exist, so a list made elsewhere cannot silently score
    fewer images than it names."""
    try:
        paths = list(dict.fromkeys(read_path_list(list_file)))  # an image named twice is scored once
    except DataError as e:
        problem(str(e))
        return None
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        problem(f"{len(missing)} of the {len(paths)} images listed in {list_file} do not exist (the first: "
                f"{missing[0]})")
        return None
    return paths


def read_suite(path: str | os.PathLike) -> Suite:
    """Read and check a suite file: every set must exist and hold images. Raises :class:`SuiteError` naming the
    file and each set at fault (all of them at once), before anything is scored."""
    path = Path(path).expanduser()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SuiteError(f"benchmark suite not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SuiteError(f"cannot read benchmark suite {path}: {' '.join(str(e).split())}") from None
    try:
        spec = SuiteSpec.model_validate(raw if raw is not None else {})
    except ValidationError as e:
        raise SuiteError(f"benchmark suite {path}: {_one_line(e)} (expected labelled:, generators: and real: "
                         "sections mapping set names to their paths)") from None
    names = [*spec.labelled, *spec.generators, *spec.real]
    if not names:
        raise SuiteError(f"benchmark suite {path} names no sets (labelled:, generators:, real:)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SuiteError(f"benchmark suite {path}: set name(s) used in two sections: {', '.join(twice)}")

    def where(value: str) -> Path:  # normalised, so that one image named by two routes is scored once
        return Path(os.path.normpath(path.parent.absolute() / Path(value).expanduser()))

    problems: list[str] = []
    resolved: dict[str, BenchmarkSet] = {}

    def set_images(name: str, kind: str, value: str, what: str) -> list[str] | None:
        source = where(value)
        if source.is_dir():
            images = _images_in(source)
        elif source.is_file():
            images = _listed_images(source, lambda problem: problems.append(f"{kind} set {name!r}: {problem}"))
            if images is None:
                return None
        else:
            problems.append(f"{kind} set {name!r}: {what} folder or list {source} does not exist")
            return None
        if not images:
            problems.append(f"{kind} set {name!r}: no images in {source}")
            return None
        return images

    for name, s in spec.labelled.items():
        try:
            index = discover(where(s.data))
        except DataError as e:
            problems.append(f"labelled set {name!r}: {e}")
            continue
        split = SPLIT_ALIASES.get(s.split.lower(), s.split) if s.split else (
            "test" if "test" in index.splits or len(index.splits) != 1 else next(iter(index.splits)))
        if split not in index.splits:
            problems.append(f"labelled set {name!r}: no {split!r} split in {index.describe()}; give split: one of "
                            f"{', '.join(sorted(index.splits))}")
            continue
        counts = class_counts(index.splits[split])
        if not counts["real"] or not counts["fake"]:
            problems.append(f"labelled set {name!r}: the {split} split of {where(s.data)} needs real and fake "
                            f"images, has {counts['real']} real and {counts['fake']} fake")
            continue
        resolved[name] = BenchmarkSet(name, "labelled", {"data": str(where(s.data)), "split": split},
                                      tuple(index.splits[split]))
    for name, s in spec.real.items():
        images = set_images(name, "real", s.images, "images")
        if images is not None:
            resolved[name] = BenchmarkSet(name, "real", {"images": str(where(s.images))},
                                          tuple(Sample(p, REAL) for p in images))
    for name, s in spec.generators.items():
        fakes = set_images(name, "generator", s.fakes, "fakes")
        if s.reals not in spec.labelled and s.reals not in spec.real:
            problems.append(f"generator set {name!r}: reals: {s.reals!r} is not a labelled or real set of this suite "
                            f"(those are: {', '.join([*spec.labelled, *spec.real]) or 'none'})")
            continue
        if fakes is None or s.reals not in resolved:  # the reals' own problem is already listed
            continue
        reals = tuple(x for x in resolved[s.reals].samples if x.label == REAL)
        resolved[name] = BenchmarkSet(name, "generator", {"fakes": str(where(s.fakes)), "reals": s.reals},
                                      tuple(Sample(p, FAKE) for p in fakes) + reals)
    if problems:
        raise SuiteError(f"benchmark suite {path}: {len(problems)} set(s) cannot be used: " + "; ".join(problems))
    order = [*spec.labelled, *spec.generators, *spec.real]
    return Suite(path, spec.name or path.stem, spec.description, tuple(resolved[n] for n in order))


# -- the result file ------------------------------------------------------------------------------------------
class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")  # later versions may add fields; what is read here must be right


class RocPoints(_Record):
    fpr: list[float]
    tpr: list[float]


class SetResult(_Record):
    name: str
    kind: Literal["labelled", "generator", "real"]
    source: dict[str, str]
    n_real: int = Field(ge=0)
    n_fake: int = Field(ge=0)
    skipped: int = Field(ge=0)
    metrics: dict[str, float | None]
    intervals: dict[str, tuple[float, float] | None]
    roc: RocPoints | None = None

    @model_validator(mode="after")
    def _measures_of_its_kind(self):
        for field in ("metrics", "intervals"):
            missing = set(KIND_MEASURES[self.kind]) - set(getattr(self, field))
            if missing:
                raise ValueError(f"set {self.name!r} ({self.kind}) has no {field} {', '.join(sorted(missing))}")
        bad = [k for k, v in self.metrics.items() if v is not None and not 0 <= v <= 1]
        if bad:
            raise ValueError(f"set {self.name!r}: {', '.join(bad)} outside [0, 1]")
        return self


class DetectorInfo(_Record):
    name: str
    path: str
    threshold: float
    threshold_policy: str | None = None
    runtime: str | None = None


class BenchmarkResult(_Record):
    schema_version: int
    fakeface_version: str
    suite: str
    suite_name: str
    detector: DetectorInfo
    interval: dict[str, str | float | int]
    images: int = Field(ge=0)
    seconds: float = Field(ge=0)
    sets: list[SetResult]


def read_benchmark(path: str | os.PathLike) -> dict:
    """A ``benchmark.json`` as a dict, checked against the schema; ``ValueError`` naming the file otherwise."""
    path = Path(path)
    what = f"{path}: not a benchmark.json written by fakeface benchmark"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (fakeface benchmark --out DIR writes DIR/{FILES['json']})") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{what} ({e})") from None
    if not isinstance(raw, dict) or "schema_version" not in raw:
        raise ValueError(f"{what} (no schema_version)")
    if raw["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"{path}: benchmark schema version {raw['schema_version']!r}; this fakeface "
                         f"{__version__} reads version {SCHEMA_VERSION}")
    try:
        return BenchmarkResult.model_validate(raw).model_dump(mode="json")
    except ValidationError as e:
        raise ValueError(f"{what} ({_one_line(e)})") from None


def find_benchmarks(folder: str | os.PathLike) -> list[tuple[Path, dict]]:
    """The benchmarks of a run or evaluation folder: its own benchmark.json and its sub-folders' (one level, e.g.
    ``RUN/benchmark/``), read and checked; one that cannot be read is skipped with a note on stderr."""
    folder = Path(folder)
    paths = [folder / FILES["json"]] if (folder / FILES["json"]).is_file() else []
    found = []
    for p in paths + sorted(folder.glob(f"*/{FILES['json']}")):
        try:
            found.append((p, read_benchmark(p)))
        except ValueError as e:
            print(f"skipped {e}", file=sys.stderr)
    return found


# -- the table ------------------------------------------------------------------------------------------------
def _cell(result: dict, key: str) -> str:
    if key not in KIND_MEASURES[result["kind"]]:
        return "-"
    value, ci = result["metrics"][key], result["intervals"].get(key)
    return fmt(value, 3) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and value is not None else "")


def benchmark_rows(result: dict) -> dict[str, dict[str, str]]:
    """The table as ``{set name: {column: cell}}``: each value with its interval, "-" where it does not apply."""
    rows = {}
    for s in result["sets"]:
        kind = {"labelled": "labelled", "generator": f"generator vs {s['source'].get('reals')} reals",
                "real": "reals only"}[s["kind"]]
        images = f"{s['n_real']} real + {s['n_fake']} fake" + (f" ({s['skipped']} unreadable)" if s["skipped"] else "")
        rows[s["name"]] = {"kind": kind, "images": images, **{h: _cell(s, k) for k, h in COLUMNS.items()}}
    return rows


def benchmark_table_markdown(result: dict) -> str:
    """The benchmark as one Markdown table (for benchmark.md, the model card and the report), with a line saying
    at which threshold and with what intervals."""
    rows = benchmark_rows(result)
    header = ["set", "kind", "images", *COLUMNS.values()]
    d, interval = result["detector"], result["interval"]
    note = (f"Detector `{d['name']}` at its threshold {d['threshold']:.4f}; fake is the positive class; "
            f"in brackets a {float(interval['confidence']):.0%} interval ({interval['method']}, "
            f"{interval['resamples']} resamples).")
    return md_table(header, [[name, *cells.values()] for name, cells in rows.items()]) + "\n\n" + note


# -- scoring --------------------------------------------------------------------------------------------------
def _set_result(bset: BenchmarkSet, scores: dict[str, dict], threshold: float, n_boot: int) -> dict:
    rows = [scores[s.path] for s in bset.samples]
    ok = [r["error"] is None for r in rows]
    if not any(ok):
        raise DataError(f"benchmark set {bset.name!r}: none of its {len(rows)} images could be read, e.g. "
                        f"{rows[0]['path']}: {rows[0]['error']}")
    y = np.array([s.label for s, good in zip(bset.samples, ok) if good])
    p = np.array([r["p_fake"] for r, good in zip(rows, ok) if good])
    measures = KIND_MEASURES[bset.kind]
    m = compute_metrics(y, p, threshold)
    ci = bootstrap_ci(y, p, threshold, metrics=[MEASURES[k] for k in measures], n_boot=n_boot) if n_boot else {}

    def flip(v):  # real_accuracy -> false-positive rate
        return None if v is None else 1.0 - v

    metrics, intervals = {}, {}
    for key in measures:
        value, interval = m[MEASURES[key]], ci.get(MEASURES[key])
        if key == "fpr_at_threshold":
            value, interval = flip(value), interval and [flip(interval[1]), flip(interval[0])]
        metrics[key], intervals[key] = value, interval
    roc = None
    if bset.kind != "real":
        fpr, tpr, _ = roc_curve(y, p, pos_label=FAKE)  # drop_intermediate: the curve's corners, enough to draw it
        roc = {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}
    counts = class_counts([s for s, good in zip(bset.samples, ok) if good])
    return {"name": bset.name, "kind": bset.kind, "source": bset.source, "n_real": counts["real"],
            "n_fake": counts["fake"], "skipped": len(ok) - sum(ok),
            "skipped_examples": [{"path": r["path"], "reason": r["error"]} for r in rows if r["error"]][:20],
            "metrics": metrics, "intervals": intervals, "roc": roc}


def score_suite(detector, suite: Suite, batch_size: int = 64, workers: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, dict]:
    """``{path: predict row}`` for every image of the suite, each scored once in one stream of batches (threads
    decode the next batches meanwhile). ``progress(n_just_scored, total)`` after each batch."""
    paths = suite.image_paths()
    on_progress = None if progress is None else (lambda n: progress(n, len(paths)))
    return {r["path"]: r for r in predict_paths(detector, paths, batch_size, workers, on_progress=on_progress)}


def run_benchmark(detector, suite: Suite | str | os.PathLike, out_dir: str | os.PathLike, batch_size: int = 64,
                  workers: int | None = None, n_boot: int = 1000,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Score ``suite`` (a :class:`Suite` or a suite file) with ``detector`` at its own threshold; write
    benchmark.json, benchmark.md, benchmark.png and scores.csv into ``out_dir``; return the result dict."""
    suite = suite if isinstance(suite, Suite) else read_suite(suite)
    if n_boot < 0:
        raise ValueError(f"bootstrap resamples must be >= 0, got {n_boot}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / FILES["json"]).unlink(missing_ok=True)  # its presence means a whole benchmark: never an earlier one's

    start = time.perf_counter()
    scores = score_suite(detector, suite, batch_size, workers, progress)
    seconds = time.perf_counter() - start
    threshold = float(detector.threshold)
    result = {
        "schema_version": SCHEMA_VERSION,
        "fakeface_version": __version__,
        "suite": str(suite.path),
        "suite_name": suite.name,
        "detector": {"name": detector.name, "path": str(detector.checkpoint["path"]), "threshold": threshold,
                     "threshold_policy": detector.checkpoint.get("threshold_policy"), "runtime": detector.runtime},
        "interval": {"method": "stratified percentile bootstrap", "confidence": CONFIDENCE, "resamples": n_boot},
        "images": len(scores),
        "seconds": round(seconds, 2),
        "sets": [_set_result(bset, scores, threshold, n_boot) for bset in suite.sets],
    }
    result = BenchmarkResult.model_validate(result).model_dump(mode="json")  # as read_benchmark will read it

    _write_scores(out / FILES["scores"], scores)
    plot_benchmark(result, out / FILES["plot"])
    heading = f"# Benchmark `{suite.name}`\n\n" + (f"{suite.description}\n\n" if suite.description else "")
    write_text_atomic(out / FILES["markdown"], heading + benchmark_table_markdown(result) + "\n\n" +
                       f"Suite: `{suite.path}`; {len(scores)} images scored once each in {seconds:.0f} s.\n")
    write_text_atomic(out / FILES["json"], json.dumps(result, indent=2))  # last
    return result


def _write_scores(path: Path, scores: dict[str, dict]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "p_fake", "error"])
    writer.writerows([r["path"], "" if r["p_fake"] is None else repr(r["p_fake"]), r["error"] or ""]
                     for r in scores.values())
    write_text_atomic(path, buf.getvalue())


def plot_benchmark(result: dict, path: str | os.PathLike) -> Path:
    """Left: the ROC curve of every labelled and generator set. Right: at the detector's threshold, the share of
    fakes caught (labelled and generator sets) and of reals flagged (labelled and real sets), with intervals."""
    fig = new_figure(12.0, 5.0)
    roc_ax, bar_ax = fig.subplots(1, 2)
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", label="chance")
    for s in result["sets"]:
        if s["roc"] is not None:
            auc = s["metrics"]["roc_auc"]
            roc_ax.plot(s["roc"]["fpr"], s["roc"]["tpr"], lw=2,
                        label=f"{s['name']} (AUC = {fmt(auc, 3)})")
    roc_ax.set(xlabel="false positive rate (reals flagged fake)", ylabel="true positive rate (fakes caught)",
               title="ROC curves (fake = positive)", xlim=(0, 1), ylim=(0, 1.01))
    roc_ax.set_aspect("equal")
    roc_ax.grid(alpha=0.3)
    roc_ax.legend(loc="lower right", fontsize=8)

    bars = [(f"{s['name']}: fakes caught", s, "tpr_at_threshold", COLORS["fake"]) for s in result["sets"]
            if "tpr_at_threshold" in KIND_MEASURES[s["kind"]]]
    bars += [(f"{s['name']}: reals flagged", s, "fpr_at_threshold", COLORS["real"]) for s in result["sets"]
             if "fpr_at_threshold" in KIND_MEASURES[s["kind"]]]
    ys = np.arange(len(bars))[::-1]
    values = [s["metrics"][k] or 0.0 for _, s, k, _ in bars]
    errors = np.array([[v - ci[0], ci[1] - v] if (ci := s["intervals"].get(k)) else [0.0, 0.0]
                       for v, (_, s, k, _) in zip(values, bars)]).reshape(-1, 2).T
    bar_ax.barh(ys, values, xerr=errors, color=[c for *_, c in bars], capsize=3)
    for y, v in zip(ys, values):
        bar_ax.text(min(v + 0.02, 0.9), y, f"{v:.1%}", va="center", fontsize=8)
    bar_ax.set_yticks(ys, labels=[label for label, *_ in bars], fontsize=8)
    bar_ax.set(xlim=(0, 1), xlabel="share of images flagged fake",
               title=f"At the detector's threshold ({result['detector']['threshold']:.3f})")
    bar_ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


def run(checkpoints, suite_path: str | os.PathLike, out_dir: str | os.PathLike, batch_size: int = 64,
        workers: int | None = None, n_boot: int = 1000, device: str = "auto", precision: str = "auto",
        progress: Callable[[int, int], None] | None = None) -> dict:
    """``fakeface benchmark``: check the suite, load the detector (a checkpoint, run folder, ``.onnx`` file, or a
    list of them: an ensemble), score, write ``out_dir``; return the result (see :func:`benchmark_table_markdown`)."""
    suite = read_suite(suite_path)  # every set checked before a model is loaded or an image scored
    detector = load_detector(checkpoints, device=device, precision=precision)
    return run_benchmark(detector, suite, out_dir, batch_size, workers, n_boot, progress)

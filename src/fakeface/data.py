"""Finding labelled face images on disk, and loading them without letting one bad file stop a run.

Layouts read by :func:`discover` (labels always come from names, never from folder order):

* the Kaggle "140k Real and Fake Faces" layout - ``real_vs_fake/{train,valid,test}.csv`` plus
  ``real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}/`` - whether the path given is ``real_vs_fake/``,
  its ``real-vs-fake/`` folder or the folder above; with the CSVs (their ``label`` is 1 = real: converted
  here, once) or without;
* any folder with ``real/`` and ``fake/`` (or CNNDetection's ``0_real/`` and ``1_fake/``), at any depth, with
  or without ``train/valid/test`` folders at any depth above or below them (an image under two different split
  folders, or class folders outside every split folder beside others inside one, are refused as ambiguous);
* a CSV manifest with a path column and a label column (``real``/``fake``; numeric labels mean 1 = fake), an
  optional ``split`` column, any other columns kept as metadata. With both ``label`` and ``label_str`` (the
  140k CSVs have label 1 = real), the convention is the one under which the two columns agree.
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import CLASS_NAMES, FAKE, REAL
from .augment import AugmentConfig, train_view
from .files import atomic_path, walk
from .images import DEFAULT_MAX_PIXELS, ImageLoadError, is_image_file, load_image, load_pixels
from .preprocess import Preprocess, to_uint8_tensor
from .synthfake import synth_fake

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "val": "valid",
                 "validation": "valid", "test": "test", "testing": "test"}
CLASS_DIRS = {"real": REAL, "0_real": REAL, "fake": FAKE, "1_fake": FAKE}
LABEL_WORDS = {"real": REAL, "0_real": REAL, "fake": FAKE, "1_fake": FAKE}
PATH_COLUMNS = ("path", "filepath", "file_path", "image_path", "image", "file", "filename")
LABEL_COLUMNS = ("label", "label_str", "class", "target", "is_fake")
UNLABELLED = -1


class DataError(ValueError):
    """A dataset that cannot be used; the message is one line saying what was found."""


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # FAKE, REAL or UNLABELLED
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class DatasetIndex:
    """Every split found under one root, and what was noticed on the way."""

    root: Path
    layout: str
    splits: dict[str, list[Sample]]
    notes: list[str] = field(default_factory=list)
    labels: str = "folder names"  # where the labels came from, and which numeric convention was read


    def counts(self) -> dict[str, dict[str, int]]:
        return {split: class_counts(samples) for split, samples in self.splits.items()}

    def describe(self) -> str:
        parts = [f"{s}: {c['real']} real + {c['fake']} fake" for s, c in self.counts().items()]
        return f"{self.root} ({self.layout}; labels: {self.labels}) - " + ("; ".join(parts) or "no images")


def class_counts(samples: list[Sample]) -> dict[str, int]:
    c = Counter(s.label for s in samples)
    return {"real": c[REAL], "fake": c[FAKE]}


# -- discovery ------------------------------------------------------------------------------------------------
def read_path_list(path: str | os.PathLike) -> list[str]:
    """The paths a list file names, one a line, relative to the file's folder unless absolute; blank lines and
    ``#`` comments skipped. Raises :class:`DataError` when the file cannot be read as text."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the list {path}: {type(e).__name__}") from None
    return [os.path.normpath(path.parent / Path(line).expanduser()) for line in lines
            if line and not line.startswith("#")]


def discover(path: str | os.PathLike) -> DatasetIndex:
    """Index the labelled images under ``path`` (a folder or a CSV manifest). Raises :class:`DataError`."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"dataset path does not exist: {root}")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{root} is a file but not a CSV manifest")
        index = _read_manifest(root)
    else:
        top_csvs = {s: root / f"{s}.csv" for s in SPLITS if (root / f"{s}.csv").is_file()}
        if top_csvs and (root / "real_vs_fake" / "real-vs-fake").is_dir():
            # Kaggle's archive keeps the CSVs beside real_vs_fake/, not inside it
            index = _read_140k_csvs(root, top_csvs, root / "real_vs_fake" / "real-vs-fake")
            return _finish(index, root)
        if (root / "real_vs_fake").is_dir() and not _class_dirs(root, depth=1):
            root = root / "real_vs_fake"
        if root.name == "real-vs-fake" and any((root.parent / f"{s}.csv").is_file() for s in SPLITS):
            root = root.parent  # the CSVs beside it are the dataset's truth
        csvs = {s: root / f"{s}.csv" for s in SPLITS if (root / f"{s}.csv").is_file()}
        if csvs and (root / "real-vs-fake").is_dir():
            index = _read_140k_csvs(root, csvs, root / "real-vs-fake")
        else:
            folder = root / "real-vs-fake" if (root / "real-vs-fake").is_dir() else root
            index = _read_folders(folder)
            if folder != root or root.name == "real-vs-fake":
                index.root, index.layout = root, "140k-folders"
    return _finish(index, root)


def _finish(index: DatasetIndex, root: Path) -> DatasetIndex:
    index.splits = {s: v for s, v in index.splits.items() if v}
    if not index.splits and index.layout == "manifest":  # the layout is right; its rows are what is missing
        skipped = f" ({'; '.join(index.notes)})" if index.notes else ""
        raise DataError(f"no labelled images in the manifest {root}: it has no usable rows{skipped}")
    if not index.splits:
        raise DataError(
            f"no labelled images found in {root}: expected real/ and fake/ folders (or 0_real/ and 1_fake/), "
            "the 140k layout (real_vs_fake/ with train.csv ...), or a CSV manifest with path and label columns"
        )
    return index


def _class_dirs(folder: Path, unreadable: list | None = None, depth: int = 8) -> list[tuple[Path, int]]:
    """Folders named like a class (real/, fake/, 0_real/, 1_fake/) under ``folder``, shallowest first."""
    found = []
    for dirpath, dirnames, _ in walk(folder, unreadable):
        rel_depth = len(Path(dirpath).relative_to(folder).parts)
        keep = []
        for d in dirnames:
            label = CLASS_DIRS.get(d.lower())
            if label is not None:
                found.append((Path(dirpath) / d, label))
            elif rel_depth + 1 < depth:
                keep.append(d)
        dirnames[:] = keep  # do not descend into class folders or past depth
    return found


def _images_under(folder: Path, notes: Counter, unreadable: list | None = None) -> list[Path]:
    out = []
    for dirpath, _, filenames in walk(folder, unreadable):
        for name in filenames:
            if name.startswith("."):
                continue
            if is_image_file(name):
                out.append(Path(dirpath) / name)
            else:
                notes[Path(name).suffix.lower() or name] += 1
    return out


def _split_of(folder: Path, directory: Path) -> str | None:
    """The split named by a train/valid/test folder between ``folder`` and ``directory``, if any."""
    named = {}
    for part in directory.relative_to(folder).parts:
        split = SPLIT_ALIASES.get(part.lower())
        if split is not None:
            named.setdefault(split, part)
    if len(named) > 1:
        raise DataError(f"{directory} lies under both {'/ and '.join(named.values())}/ folders: cannot tell which "
                        "split its images belong to; point --data at one of them")
    return next(iter(named), None)


def _read_folders(folder: Path) -> DatasetIndex:
    ignored: Counter = Counter()
    splits: dict[str, list[Sample]] = {}
    outside: list[Path] = []  # class folders holding images that no split folder encloses
    split_by_dir: dict[Path, str | None] = {}
    unreadable: list[tuple[str, str]] = []
    for class_dir, label in _class_dirs(folder, unreadable):
        for p in _images_under(class_dir, ignored, unreadable):
            if p.parent not in split_by_dir:
                split_by_dir[p.parent] = _split_of(folder, p.parent)
            split = split_by_dir[p.parent]
            if split is None and (not outside or outside[-1] != class_dir):
                outside.append(class_dir)
            splits.setdefault(split, []).append(Sample(str(p), label))
    if outside and len(splits) > 1:
        named = "/".join(s for s in SPLITS if s in splits)
        raise DataError(f"{folder} has {named} folders, and images outside any train/valid/test folder in "
                        f"{', '.join(map(str, outside[:3]))}: move them into a split folder, or point --data at "
                        "one part")
    if None in splits:
        splits["train"] = splits.pop(None)  # no split folders at all: everything is training data
    notes = [f"ignored {n} non-image file(s) with suffix {s!r}" for s, n in ignored.items()]
    notes += [f"could not read the folder {path}: {reason}" for path, reason in unreadable]
    return DatasetIndex(folder, "folders", {s: splits[s] for s in SPLITS if s in splits}, notes)


def _parse_label(value: str, numeric_fake: int) -> int:
    v = value.strip().lower()
    if v in LABEL_WORDS:
        return LABEL_WORDS[v]
    if v in ("0", "1", "0.0", "1.0"):
        return FAKE if int(float(v)) == numeric_fake else REAL
    raise ValueError(f"label {value!r} is neither real/fake nor 0/1")


def _read_rows(csv_path: Path) -> tuple[list[str], list[dict]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read CSV {csv_path}: {e}") from e


def _label_convention(csv_path: Path, rows: list[dict], label_col: str, words_col: str) -> tuple[int, str, bool]:
    """(the numeric label meaning fake, how it was decided, whether the word column is a label) for a CSV with
    both a numeric and a word label column.

    The README's convention is 1 = fake; the 140k CSVs say 1 = real beside ``label_str``. Whichever the two
    columns agree under on more rows is the file's convention.
    """
    agree = Counter()  # numeric value meaning fake -> rows agreeing under it
    for row in rows:
        word = LABEL_WORDS.get((row.get(words_col) or "").strip().lower())
        number = (row.get(label_col) or "").strip()
        if word is not None and number in ("0", "1", "0.0", "1.0"):
            agree[int(float(number)) if word == FAKE else 1 - int(float(number))] += 1
    if agree[1] == agree[0] and agree[1]:
        raise DataError(f"{csv_path}: {label_col} and {words_col} agree on as many rows with 1 = fake as with "
                        f"1 = real ({agree[1]} each): cannot tell whether label 1 means fake or real")
    if agree[0] > agree[1]:
        return 0, f"{label_col} 1 = real, the 140k CSVs' convention ({words_col} agrees)", True
    if agree[1]:
        return 1, f"{label_col} 1 = fake ({words_col} agrees)", True
    if any(LABEL_WORDS.get((row.get(words_col) or "").strip().lower()) is not None for row in rows):
        return 1, f"{label_col} (real/fake, or 1 = fake), checked against {words_col}", True
    return 1, f"{label_col} 1 = fake ({words_col} names no class: kept as metadata)", False


def _samples_from_rows(csv_path: Path, rows: list[dict], columns: list[str], base: Path,
                       notes: list[str]) -> tuple[list[tuple[str | None, Sample]], str]:
    """Rows -> [(split or None, sample)], and how the labels were read."""
    lower = {c.lower().strip(): c for c in columns if c}
    path_col = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
    label_col = next((lower[c] for c in LABEL_COLUMNS if c in lower), None)
    if path_col is None or label_col is None:
        raise DataError(f"{csv_path}: need a path column ({'/'.join(PATH_COLUMNS)}) and a label column "
                        f"({'/'.join(LABEL_COLUMNS)}); found columns {columns}")
    split_col = lower.get("split")
    words_col = lower.get("label_str") if label_col == lower.get("label") else None
    numeric_fake, labels = 1, f"column {label_col} (real/fake, or 1 = fake)"
    if words_col is not None:
        numeric_fake, labels, words_are_labels = _label_convention(csv_path, rows, label_col, words_col)
        words_col = words_col if words_are_labels else None
    meta_cols = [c for c in columns if c and c not in (path_col, label_col, split_col)]
    out, bad, disagree, unknown_splits = [], 0, 0, Counter()
    for row in rows:
        split_value = (row.get(split_col) or "").strip() if split_col else ""
        if split_value and split_value.lower() not in SPLIT_ALIASES:  # a typo must not leak rows into training
            unknown_splits[split_value] += 1
            continue
        try:
            label = _parse_label(row[label_col] or "", numeric_fake)
            rel = (row[path_col] or "").strip()
            if not rel:
                raise ValueError("empty path")
        except (ValueError, KeyError, AttributeError):
            bad += 1
            continue
        word = LABEL_WORDS.get((row.get(words_col) or "").strip().lower()) if words_col else None
        if word is not None and word != label:
            disagree += 1
            continue
        split = SPLIT_ALIASES.get(split_value.lower())
        meta = {c: row.get(c) for c in meta_cols}
        out.append((split, Sample(str(base / rel), label, meta)))
    if bad:
        notes.append(f"{csv_path.name}: skipped {bad} row(s) with a missing path or an unreadable label")
    if disagree:
        notes.append(f"{csv_path.name}: skipped {disagree} row(s) whose {label_col} and {words_col} disagree")
    if unknown_splits:
        values = ", ".join(f"{v!r} x{n}" for v, n in unknown_splits.most_common())
        notes.append(f"{csv_path.name}: skipped {sum(unknown_splits.values())} row(s) whose split is none of "
                     f"train/valid/test ({values})")
    return out, labels


def _read_140k_csvs(root: Path, csvs: dict[str, Path], images: Path) -> DatasetIndex:
    notes: list[str] = []
    splits, labels = {}, {}
    for split, csv_path in csvs.items():
        columns, rows = _read_rows(csv_path)
        samples, labels[csv_path.name] = _samples_from_rows(csv_path, rows, columns, images, notes)
        splits[split] = [s for _, s in samples]
    same = len(set(labels.values())) == 1
    return DatasetIndex(root, "140k-csv", splits, notes, next(iter(labels.values())) if same else
                        "; ".join(f"{name}: {way}" for name, way in labels.items()))


def _read_manifest(csv_path: Path) -> DatasetIndex:
    notes: list[str] = []
    columns, rows = _read_rows(csv_path)
    base = csv_path.parent
    if "label_str" in columns and (base / "real-vs-fake").is_dir():
        base = base / "real-vs-fake"  # one of the 140k CSVs given directly
    splits: dict[str, list[Sample]] = {}
    samples, labels = _samples_from_rows(csv_path, rows, columns, base, notes)
    for split, sample in samples:
        splits.setdefault(split or "train", []).append(sample)
    return DatasetIndex(csv_path, "manifest", splits, notes, labels)


# -- splits ---------------------------------------------------------------------------------------------------
def split_off_validation(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded, stratified split of ``samples`` into (train, valid)."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    labels = [s.label for s in samples]
    counts = Counter(labels)
    if len(counts) < 2 or min(counts.values()) < 2:
        raise DataError(f"cannot split a validation set off {len(samples)} images ({dict(class_counts(samples))}): "
                        "need at least 2 of each class")
    if len(samples) * fraction < 2:
        raise DataError(f"cannot split a validation set off {len(samples)} images: a fraction of {fraction:g} is "
                        "under 2 images; give the data a valid/ split, or more images")
    train, valid = train_test_split(samples, test_size=fraction, random_state=seed, stratify=labels)
    return sorted(train, key=lambda s: s.path), sorted(valid, key=lambda s: s.path)


def require_both_classes(samples: list[Sample], what: str) -> None:
    c = class_counts(samples)
    if not samples:
        raise DataError(f"{what} has no images")
    missing = [name for name in CLASS_NAMES if c[name] == 0]
    if missing:
        raise DataError(f"{what} has only one class: {c['real']} real and {c['fake']} fake images")


def write_split_csv(path: Path, splits: dict[str, list[Sample]]) -> None:
    """Record exactly which file went to which split (for runs that made their own validation split)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for split, samples in splits.items():
            w.writerows([s.path, CLASS_NAMES[s.label], split] for s in samples)


def read_split_csv(path: Path) -> dict[str, list[Sample]]:
    splits: dict[str, list[Sample]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            splits.setdefault(row["split"], []).append(Sample(row["path"], LABEL_WORDS[row["label"]]))
    return splits


# -- loading --------------------------------------------------------------------------------------------------
class FaceDataset(Dataset):
    """Samples -> uint8 image tensors. A file that fails to load becomes an item with an ``error``.

    Training items get :func:`~fakeface.augment.train_view` with a per-sample RNG seeded by
    (seed, epoch, index); evaluation items the deterministic ``preprocess.eval_tensor`` view.
    """

    def __init__(self, samples: list[Sample], preprocess: Preprocess, augment: AugmentConfig | None = None,
                 seed: int = 0, max_pixels: int | None = DEFAULT_MAX_PIXELS, transform=None, draft: bool = False):
        self.samples = samples
        self.preprocess = preprocess
        self.augment = augment
        self.seed = seed
        # In shared memory: persistent loader workers hold their own copy of the dataset, and must still see
        # set_epoch() - or every epoch would get the first epoch's augmentation.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.max_pixels = max_pixels
        self.transform = transform  # optional extra PIL -> PIL step (robustness perturbations)
        # Large JPEGs decoded at a reduced scale (load_image's min_side) - only for the plain evaluation view:
        # augmentations and transforms expect the whole image.
        plain = draft and augment is None and transform is None
        self.min_side = preprocess.min_decode_side if plain else None

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating the loader for ``epoch`` (its workers prefetch as soon as it starts)."""
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        item = {"index": index, "label": sample.label, "image": None, "error": None}
        try:
            if self.augment is None and self.transform is None:  # the plain view needs no Pillow image
                item["image"] = self.preprocess.eval_tensor(load_pixels(sample.path, self.max_pixels, self.min_side))
                return item
            img = load_image(sample.path, self.max_pixels, self.min_side)
            if self.transform is not None:
                img = self.transform(img, index)
            if self.augment is not None:
                rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
                # drawn only when on, so runs without it keep their augmentation stream
                if sample.label == REAL and self.augment.synth_fake_p > 0 and rng.random() < self.augment.synth_fake_p:
                    img, item["label"] = synth_fake(img, rng), FAKE
                item["image"] = to_uint8_tensor(train_view(img, self.preprocess, self.augment, rng))
            else:
                item["image"] = self.preprocess.eval_tensor(img)
        except ImageLoadError as e:
            item["error"] = str(e)
        return item


def collate(items: list[dict]) -> dict:
    """Stack the good items; report the broken ones as ``failures`` [(index, reason), ...]."""
    good = [it for it in items if it["error"] is None]
    # numpy's stack, single-threaded: torch.stack would start an OpenMP team in a decoding thread (see
    # preprocess.to_uint8_tensor)
    images = np.stack([it["image"].numpy() for it in good]) if good else np.empty((0, 3, 1, 1), np.uint8)
    return {
        "image": torch.from_numpy(images),
        "label": torch.tensor([it["label"] for it in good], dtype=torch.float32),
        "index": torch.tensor([it["index"] for it in good], dtype=torch.long),
        "failures": [(it["index"], it["error"]) for it in items if it["error"] is not None],
    }


def default_workers() -> int:
    """Loader worker processes: one core per worker, leaving one to the model (at least 1, at most 8). Under
    torchrun the machine's cores are shared by its ``LOCAL_WORLD_SIZE`` processes."""
    n = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, min(8, n - 1))


def decoded_batches(ds: FaceDataset, batch_size: int, workers: int, ahead: int | None = None) -> Iterator[dict]:
    """:func:`collate`'d batches of ``ds``, in order, decoded while the caller scores earlier ones.

    ``workers`` threads decode whole batches; at most ``ahead`` batches (default ``2 * workers``) are decoded or
    being decoded beyond the one the caller holds, so memory stays flat however many files there are.
    ``workers=0`` decodes each batch in the caller's thread when it is asked for.

    Threads, not processes: libjpeg-turbo (simplejpeg, Pillow) releases the GIL while it decodes, PyTorch while it
    resizes and computes, ONNX Runtime while it computes, so nothing waits on the GIL, and batches need no pickling
    or shared memory to reach the model. Decoding uses no parallel torch operator (see
    :func:`collate`): one would start its own OpenMP team in the decoding thread, beside the
    model's; the resize (:func:`~fakeface.preprocess.resize_pixels`) runs inline for one image.
    """
    starts = iter(range(0, len(ds), batch_size))

    def load(start: int) -> dict:
        return collate([ds[i] for i in range(start, min(start + batch_size, len(ds)))])

    if workers == 0:
        yield from map(load, starts)
        return
    ahead = ahead or 2 * workers
    pool = ThreadPoolExecutor(workers, thread_name_prefix="fakeface-decode")
    try:
        pending = deque(pool.submit(load, start) for start in islice(starts, ahead))
        while pending:
            batch = pending.popleft().result()
            pending.extend(pool.submit(load, start) for start in islice(starts, 1))  # keep `ahead` in flight
            yield batch
    finally:  # also when the caller stops early: drop what was not started, wait for what was
        pool.shutdown(wait=True, cancel_futures=True)

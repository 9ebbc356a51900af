"""Scoring image files with a detector (:mod:`fakeface.detector`): the library side of ``fakeface predict``.

:func:`predict_paths` streams any number of files in batches and yields one row per input - scored, or with
the reason it could not be. Threads decode the next batches while the model scores the current one
(:func:`fakeface.data.decoded_batches`), and nothing holds more than a few batches of decoded images at once.
:class:`PredictionWriter` writes the rows (JSON lines, a table, CSV) as they come.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from . import CLASS_NAMES, distributed
from .data import UNLABELLED, FaceDataset, Sample, decoded_batches, default_workers
from .files import walk
from .images import DEFAULT_MAX_PIXELS


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Files as given, folders walked recursively (sorted, hidden files skipped, links followed). Missing paths
    and folders that cannot be listed stay in the list so that they get a row saying so."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            unreadable: list[tuple[str, str]] = []
            for dirpath, dirnames, filenames in walk(p, unreadable):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                out += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".")]
            out += [path for path, _ in unreadable]
        else:
            out.append(str(p))
    return out


def predict_paths(detector, paths: list[str], batch_size: int = 32, workers: int | None = None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, labels: list[int] | None = None,
                  on_progress=None, transform=None, draft: bool = False) -> Iterator[dict]:
    """Yield ``{"path", "p_fake", "pred", "error", "label"}`` per input, in input order.

    ``workers``: decoding threads (default: one per core but one; 0: decode in this thread, between batches).
    ``transform(img, index) -> img`` is applied to each decoded image first (robustness perturbations).
    ``draft=True`` decodes JPEGs at least twice the model's view at a reduced scale (see
    :func:`fakeface.images.load_image`): faster on large photos, within a grey level or so of the full decode;
    images smaller than that, and any image when ``transform`` is given, are decoded whole as usual.
    An :class:`~fakeface.detector.Ensemble`'s rows add ``member_p_fake``: each member's calibrated P(fake), in
    member order.
    """
    if len(detector.members) > 1:
        streams = [predict_paths(m, paths, batch_size, workers, max_pixels, labels, None, transform, draft)
                   for m in detector.members]
        for rows in zip(*streams):
            row = dict(rows[0])
            if all(r["error"] is None for r in rows):
                member_p = [r["p_fake"] for r in rows]
                row["p_fake"] = float(detector.combine(np.array(member_p)[:, None])[0])
                row["pred"], row["member_p_fake"] = detector.verdict(row["p_fake"]), member_p
            else:
                row.update(p_fake=None, pred=None, error=next(r["error"] for r in rows if r["error"]))
            yield row
            if on_progress is not None:
                on_progress(1)
        return
    labels = labels or [UNLABELLED] * len(paths)
    ds = FaceDataset([Sample(p, y) for p, y in zip(paths, labels)], detector.preprocess, max_pixels=max_pixels,
                     transform=transform, draft=draft)
    workers = default_workers() if workers is None else workers
    for batch in decoded_batches(ds, batch_size, workers):
        rows = {}
        if len(batch["index"]):
            probs = detector.p_fake(detector.scorer.logits(batch["image"]).numpy())
            for i, p in zip(batch["index"].tolist(), probs):
                rows[i] = {"p_fake": float(p), "pred": detector.verdict(p), "error": None}
        for i, reason in batch["failures"]:
            rows[i] = {"p_fake": None, "pred": None, "error": reason}
        for i in sorted(rows):
            label = ds.samples[i].label
            yield {"path": ds.samples[i].path, "label": CLASS_NAMES[label] if label >= 0 else None, **rows[i]}
        if on_progress is not None:
            on_progress(len(rows))


def predict_distributed(score: Callable[[list[str]], Iterable[dict]], paths: list[str]) -> Iterable[dict] | None:
    """Under torchrun, each process runs ``score`` (``paths -> rows``, e.g. :func:`predict_paths` with its
    detector) on its contiguous shard of ``paths``, and rank 0 gets every process's rows back in ``paths`` order -
    each input exactly once - while the others get ``None``. In one process: ``score(paths)``, streamed."""
    if not distributed.is_distributed():
        return score(paths)
    parts = distributed.gather_to_main(list(score(paths[distributed.shard(len(paths))])))
    return None if parts is None else (row for part in parts for row in part)


def predict_faces(detector, paths: list[str], max_pixels: int | None = DEFAULT_MAX_PIXELS, on_progress=None,
                  whole_image_if_none: bool = False, face_weights: str | os.PathLike | None = None
                  ) -> Iterator[dict]:
    """Like :func:`predict_paths`, for ordinary photos: find the faces of each image and score each one, aligned
    as the training faces were (:func:`fakeface.faces.analyse`).

    Rows add ``faces`` (per face: box, crop, quad, landmarks, score, P(fake), verdict) and ``faces_found``;
    ``p_fake``/``pred`` are the most suspicious face's. An image without a face gets ``pred`` ``"no_face"``,
    ``p_fake`` ``None`` and ``faces`` ``[]`` - unless ``whole_image_if_none``, when it is scored whole and its one
    face row says ``whole_image``. ``face_weights``: the face detector's weights file (default: the package's).

    Raises:
        FaceDetectorError: the face detector cannot be built - raised by this call, before any image is read.
    """
    from .faces import FaceDetector

    return _face_rows(detector, paths, max_pixels, on_progress, whole_image_if_none, FaceDetector(face_weights))


def _face_rows(detector, paths, max_pixels, on_progress, whole_image_if_none, face_detector) -> Iterator[dict]:
    from .faces import analyse
    from .images import ImageLoadError, load_image

    for path in paths:
        try:
            img = load_image(path, max_pixels)
        except ImageLoadError as e:
            yield {"path": path, "label": None, "p_fake": None, "pred": None, "error": str(e), "faces": [],
                   "faces_found": 0}
        else:
            result = analyse(detector, img, face_detector, whole_image_if_none)
            yield {"path": path, "label": None, "p_fake": result["p_fake"], "pred": result["verdict"], "error": None,
                   "faces": result["faces"], "faces_found": result["faces_found"]}
        if on_progress is not None:
            on_progress(1)


def verdict_text(row: dict) -> str:
    """A row's verdict in words: fake, real, no face (nothing scored) or the reason it could not be read."""
    if row["error"] is not None:
        return f"error: {row['error']}"
    return "no face" if row["p_fake"] is None else row["pred"]


def faces_text(row: dict) -> str:
    """The faces column: how many were found, or that the whole image was scored instead."""
    if row.get("faces_found"):
        return str(row["faces_found"])
    return "none: whole image" if row.get("faces") else "none"


class PredictionWriter:
    """Where ``fakeface predict``'s rows go as they are scored: JSON lines, or a table (up to ``table_limit``
    rows; tab-separated lines beyond it, so memory stays flat), and optionally a CSV file written row by row.

    ``faces`` adds the face-detection columns. Counts ``scored`` rows, ``failed`` ones (unreadable) and
    ``no_face`` ones (read, but no face found: nothing scored). Use as a context manager.
    """

    def __init__(self, json_lines: bool = False, csv_path: str | os.PathLike | None = None, faces: bool = False,
                 n_rows: int = 0, table_limit: int = 1000, out=None):
        self.json_lines, self.faces, self.out = json_lines, faces, out if out is not None else sys.stdout
        self.keys = ("path", "p_fake", "pred", "error") + (("faces_found", "faces") if faces else ())
        self.table = [] if not json_lines and n_rows <= table_limit else None
        self.scored = self.failed = self.no_face = 0
        self._csv_file = self._csv = None
        if csv_path is not None:
            Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
            self._csv_file = open(csv_path, "w", newline="")  # noqa: SIM115 - closed in close(), streamed
            self._csv = csv.DictWriter(self._csv_file, fieldnames=list(self.keys), extrasaction="ignore")
            self._csv.writeheader()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close(print_table=exc[0] is None)

    def write(self, row: dict) -> None:
        self.failed += row["error"] is not None
        self.no_face += row["error"] is None and row["p_fake"] is None
        self.scored += row["p_fake"] is not None
        if self._csv is not None:  # flushed row by row: a killed run leaves every row it scored
            self._csv.writerow({**row, "faces": json.dumps(row.get("faces"))})
            self._csv_file.flush()
        if self.json_lines:
            print(json.dumps({k: row.get(k) for k in self.keys}), file=self.out, flush=True)
        elif self.table is not None:
            self.table.append(row)
        else:
            p = "-" if row["p_fake"] is None else f"{row['p_fake']:.4f}"
            print(f"{row['path']}\t{p}\t{verdict_text(row)}", file=self.out)

    @property
    def rows(self) -> int:
        return self.scored + self.failed + self.no_face

    def close(self, print_table: bool = True) -> None:
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = self._csv = None
        if print_table and self.table is not None:
            print_table_of(self.table, self.faces, self.out)
            self.table = None


def print_table_of(rows: list[dict], faces: bool = False, out=None) -> None:
    """Prediction rows as a rich table: path, P(fake), verdict (coloured) and, with ``faces``, faces found."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    table.add_column("path", overflow="fold")
    table.add_column("P(fake)", justify="right")
    table.add_column("verdict")
    if faces:
        table.add_column("faces", justify="right")
    for r in rows:
        extra = [faces_text(r)] if faces else []
        if r["error"] is not None:
            table.add_row(escape(r["path"]), "-", f"[yellow]{escape(verdict_text(r))}[/]", *([""] if faces else []))
        elif r["p_fake"] is None:
            table.add_row(escape(r["path"]), "-", f"[yellow]{verdict_text(r)}[/]", *extra)
        else:
            style = "red" if r["pred"] == "fake" else "green"
            table.add_row(escape(r["path"]), f"{r['p_fake']:.4f}", f"[{style}]{r['pred']}[/]", *extra)
    Console(file=out, width=max(100, Console().width)).print(table)

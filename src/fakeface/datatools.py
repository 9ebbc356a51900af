"""Dataset tooling: check a dataset for problems, split a folder into the 140k layout, install the Kaggle 140k.

* :func:`check_dataset` - counts per split and class, unreadable files, size / mode / format distributions,
  exact duplicates (SHA-1 of the bytes) and near-duplicates (perceptual hash) within and across splits. A
  duplicate or near-duplicate shared by two splits is a leak: an error, like a split with one class only.
* :func:`split_dataset` - pools everything :func:`~fakeface.data.discover` finds and writes a seeded,
  class-stratified, group-aware train / valid / test split in the Kaggle 140k layout (CSVs included), with
  each near-duplicate group kept inside one split.
* :func:`download_140k` / :func:`install_archive` - fetch "xhlulu/140k-real-and-fake-faces" with the optional
  ``kaggle`` client, unpack it and verify it file by file.

Near-duplicates use the DCT perceptual hash ("pHash": Zauner, *Implementation and Benchmarking of Perceptual
Image Hash Functions*, 2010; N. Krawetz, "Looks Like It", hackerfactor.com, 2011), computed exactly as
``imagehash.phash``: grey image resized to 4*hash_size square (Lanczos), 2-D DCT-II, the top-left
hash_size x hash_size coefficients thresholded at their median.

Why 256 bits (hash_size=16) and not the usual 64: on the real faces140k sample (1,700 aligned faces) the
64-bit pHash of two *different* faces can be as close as 4 bits, while a copy brightened by 15% is already 4
bits away - no threshold separates them. At 256 bits different faces are >= 38 bits apart (the closest pairs
are StyleGAN "near-twins": the same generated identity rendered twice) and re-encoded, resized or
brightened copies stay within 12 bits, so the default threshold of 16 bits has room on both sides. pHash
does not see crops or flips as near-duplicates.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shlex
import shutil
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from . import CLASS_NAMES, FAKE, REAL
from .data import SPLITS, DataError, Sample, class_counts, default_workers, discover
from .files import walk
from .images import ImageLoadError, is_image_file, load_image

HASH_SIZE = 16  # pHash side: 16 -> 256-bit hashes (see the module docstring for why not 8)
MAX_HAMMING = 16  # near-duplicate threshold in bits (of 256)
CHUNK = 64  # files per worker task: big enough to amortise the inter-process round trip
LINK_MODES = ("copy", "symlink", "hardlink")
IMBALANCE_WARN = 0.5  # warn when the smaller class of a split is under half the size of the larger one
CLASS_SHIFT_WARN = 0.1  # warn when real and fake size/mode/format distributions differ by more (total variation)

KAGGLE_DATASET = "xhlulu/140k-real-and-fake-faces"
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_DATASET}"
# The published split: 100k / 20k / 20k images, half real, half fake.
EXPECTED_140K = {"train": {"real": 50_000, "fake": 50_000}, "valid": {"real": 10_000, "fake": 10_000},
                 "test": {"real": 10_000, "fake": 10_000}}
KAGGLE_MISSING = ("downloading needs the optional kaggle client: pip install kaggle (it reads credentials from "
                  "~/.kaggle/kaggle.json or the KAGGLE_USERNAME and KAGGLE_KEY environment variables)")
KAGGLE_NO_CREDENTIALS = ("Kaggle credentials not found: save your API token (kaggle.com > Settings > API > Create "
                         "New Token) as ~/.kaggle/kaggle.json, or set KAGGLE_USERNAME and KAGGLE_KEY")

Progress = Callable[[int, int], None]  # (files done, files in total)


# -- perceptual hash ------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II as a matrix (what scipy.fftpack.dct computes): X = M @ x, M[k, j] = 2 cos(...)."""
    k = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * j + 1) / (2 * n))


def phash_bits(img: Image.Image, hash_size: int = HASH_SIZE) -> np.ndarray:
    """DCT perceptual hash of ``img`` as ``hash_size**2`` booleans (row-major, like ``imagehash.phash``)."""
    n = 4 * hash_size
    grey = np.asarray(img.convert("L").resize((n, n), Image.Resampling.LANCZOS), dtype=np.float64)  # (n, n)
    m = _dct_matrix(n)
    low = (m @ grey @ m.T)[:hash_size, :hash_size]  # 2-D DCT, lowest frequencies only
    return (low > np.median(low)).ravel()


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between packed hashes: (..., nbytes) uint8 pairs -> (...,) int64."""
    x = np.bitwise_xor(a, b)
    if hasattr(np, "bitwise_count") and x.shape[-1] % 8 == 0:  # numpy >= 2: popcount on 64-bit words
        words = np.ascontiguousarray(x).view(np.uint64)
        return np.bitwise_count(words).sum(axis=-1, dtype=np.int64)
    return _POPCOUNT[x].sum(axis=-1, dtype=np.int64)


def near_pairs(packed: np.ndarray, n_bits: int, max_hamming: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) of rows of ``packed`` (n, nbytes) whose hashes differ in at most ``max_hamming`` bits.

    Pigeonhole / multi-index hashing (Norouzi et al., "Fast Search in Hamming Space with Multi-Index Hashing",
    CVPR 2012): cut the bits into ``max_hamming + 1`` bands; two hashes within ``max_hamming`` bits agree
    exactly on at least one band, so only pairs sharing a band value are compared. Bits are dealt into bands
    round-robin so that the low-frequency bits, nearly constant over aligned faces, are spread thin.

    Cost: per band, a sort (O(n log n)) plus one vectorised distance per candidate pair, so
    O((d + 1) n log n + C) with C = sum over bands and buckets of bucket_size^2 / 2, about
    (d + 1) n^2 / 2^(bits / (d + 1) + 1) for random bits - never the n^2 / 2 of all pairs unless the hashes are
    all alike. Measured for 140k hashes (256 bits, d = 16, one core): 1.3 s for random bits, 1.9 s with the
    bit frequencies of the real face sample, 6 s with more skewed ones.
    Returns three int64 arrays (i, j, distance), sorted by (i, j).
    """
    n = len(packed)
    empty = np.zeros(0, dtype=np.int64)
    if not 0 <= max_hamming < n_bits // 2:
        raise ValueError(f"max_hamming must be in [0, {n_bits // 2}) for {n_bits}-bit hashes, got {max_hamming}")
    if n < 2:
        return empty, empty, empty
    n_bands = max_hamming + 1
    bits = np.unpackbits(packed, axis=1, count=n_bits)  # (n, n_bits) of 0/1
    found = []
    for band in range(n_bands):
        band_bits = bits[:, band::n_bands]  # (n, ~n_bits / n_bands)
        if band_bits.shape[1] <= 62:
            key = band_bits.astype(np.int64) @ (np.int64(1) << np.arange(band_bits.shape[1], dtype=np.int64))
        else:  # wide bands (small max_hamming): number the distinct rows instead
            key = np.unique(np.packbits(band_bits, axis=1), axis=0, return_inverse=True)[1].ravel()
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        # In sorted order equal keys are contiguous: i and i + lag share a bucket only if i and i + lag - 1
        # do, so the positions still in play shrink with each lag and the total work is the candidate count.
        pos = np.arange(n - 1)
        lag = 1
        while pos.size:
            pos = pos[pos + lag < n]
            pos = pos[sorted_key[pos] == sorted_key[pos + lag]]
            for start in range(0, pos.size, 1 << 20):  # bounded memory: 1M candidate pairs at a time
                p = pos[start:start + (1 << 20)]
                a, b = order[p], order[p + lag]
                d = hamming(packed[a], packed[b])
                ok = d <= max_hamming  # checked right away: only the (few) true pairs are kept
                found.append(np.stack([np.minimum(a[ok], b[ok]), np.maximum(a[ok], b[ok]), d[ok]]))
            lag += 1
    if not found:
        return empty, empty, empty
    pairs = np.unique(np.concatenate(found, axis=1).astype(np.int64), axis=1)  # a pair seen in several bands
    return pairs[0], pairs[1], pairs[2]


# -- scanning files (in worker processes) ---------------------------------------------------------------------
def _scan_one(path: str, hash_size: int) -> dict:
    """Bytes hash, header facts and perceptual hash of one file; ``{"error": reason}`` if it does not decode."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return {"error": f"cannot read file: {e.strerror or e}"}
    try:
        img = load_image(data)  # the same decoder (and limits) as training and serving
        with Image.open(io.BytesIO(data)) as header:  # what the file says, before conversion to RGB
            fmt, mode, (w, h) = header.format, header.mode, header.size
    except ImageLoadError as e:
        return {"error": str(e)}
    packed = np.packbits(phash_bits(img, hash_size)).tobytes() if hash_size else None
    return {"sha1": hashlib.sha1(data).hexdigest(), "size": f"{w}x{h}", "mode": mode, "format": fmt or "?",
            "hash": packed}


def _scan_chunk(paths: list[str], hash_size: int) -> list[dict]:
    return [_scan_one(p, hash_size) for p in paths]


def scan_files(paths: list[str], hash_size: int = HASH_SIZE, workers: int | None = None,
               progress: Progress | None = None) -> list[dict]:
    """:func:`_scan_one` over ``paths`` in chunks, on ``workers`` processes (0 or 1: in this process).

    ``hash_size=0`` skips the perceptual hash. Results come back in the order of ``paths``.
    """
    workers = default_workers() if workers is None else workers
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    results: list[list[dict]] = [[] for _ in chunks]
    done = 0
    if workers <= 1 or len(chunks) <= 1:
        for k, chunk in enumerate(chunks):
            results[k] = _scan_chunk(chunk, hash_size)
            done += len(chunk)
            if progress:
                progress(done, len(paths))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
            futures = {pool.submit(_scan_chunk, chunk, hash_size): k for k, chunk in enumerate(chunks)}
            for fut in as_completed(futures):
                k = futures[fut]
                results[k] = fut.result()
                done += len(chunks[k])
                if progress:
                    progress(done, len(paths))
    return [r for chunk in results for r in chunk]


# -- grouping duplicates --------------------------------------------------------------------------------------
class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _duplicates(records: list[dict], near: bool, max_hamming: int):
    """Exact groups, near pairs and connected components over the readable ``records``.

    Returns (exact: list of index lists, near: list of (i, j, distance), components: list of index lists with
    more than one member). Identical files are searched once, so near pairs never repeat an exact group.
    """
    by_sha: dict[str, list[int]] = defaultdict(list)
    for k, r in enumerate(records):
        if "sha1" in r:
            by_sha[r["sha1"]].append(k)
    exact = [idx for idx in by_sha.values() if len(idx) > 1]
    uf = _UnionFind(len(records))
    for idx in exact:
        for k in idx[1:]:
            uf.union(idx[0], k)
    pairs: list[tuple[int, int, int]] = []
    reps = [idx[0] for idx in by_sha.values()]  # one file per distinct content
    if near and len(reps) > 1 and records[reps[0]].get("hash") is not None:
        n_bytes = len(records[reps[0]]["hash"])
        packed = np.frombuffer(b"".join(records[k]["hash"] for k in reps), dtype=np.uint8).reshape(-1, n_bytes)
        n_bits = n_bytes * 8
        i, j, d = near_pairs(packed, n_bits, max_hamming)
        for a, b, dist in zip(i.tolist(), j.tolist(), d.tolist()):
            pairs.append((reps[a], reps[b], dist))
            uf.union(reps[a], reps[b])
    members: dict[int, list[int]] = defaultdict(list)
    touched = {k for idx in exact for k in idx} | {k for p in pairs for k in p[:2]}
    for k in sorted(touched):
        members[uf.find(k)].append(k)
    return exact, pairs, [m for m in members.values() if len(m) > 1]


def _distribution_shift(per_class: dict[int, Counter]) -> float:
    """Total variation distance between the real and the fake distribution of one attribute (0 = same)."""
    real, fake = per_class.get(REAL, Counter()), per_class.get(FAKE, Counter())
    nr, nf = sum(real.values()), sum(fake.values())
    if not nr or not nf:
        return 0.0
    return 0.5 * sum(abs(real[v] / nr - fake[v] / nf) for v in set(real) | set(fake))


# -- check ----------------------------------------------------------------------------------------------------
def check_dataset(path: str | os.PathLike, near_duplicates: bool = True, hash_size: int = HASH_SIZE,
                  max_hamming: int = MAX_HAMMING, workers: int | None = None,
                  progress: Progress | None = None) -> dict:
    """Look for everything that would make a training run or its test score misleading.

    Decodes every file (in ``workers`` processes; 0 or 1: in this one) and reports, as a JSON-serialisable dict:
    counts per split and class, unreadable files and why, size / mode / format counts (from the file headers,
    overall and per class), exact duplicates (same bytes) and near-duplicates (perceptual-hash distance
    <= ``max_hamming`` bits). ``errors`` holds what invalidates an experiment: a duplicate or near-duplicate
    shared by two splits (a leak), the same bytes labelled real and fake, a split with one class only.
    ``warnings`` holds the rest. ``progress(done, total)`` is called as files are scanned.
    """
    t0 = time.perf_counter()
    index = discover(path)
    # One record per file, even if a CSV lists it in two splits: listings remember every (split, label).
    listings: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for split, samples in index.splits.items():
        for s in samples:
            listings[s.path].append((split, s.label))
    paths = list(listings)
    records = scan_files(paths, hash_size if near_duplicates else 0, workers, progress)

    errors: list[str] = []
    warnings = list(index.notes)
    unreadable = [{"path": p, "reason": r["error"]} for p, r in zip(paths, records) if "error" in r]
    readable = {p for p, r in zip(paths, records) if "error" not in r}
    sizes, modes, formats = Counter(), Counter(), Counter()
    per_class: dict[str, dict[int, Counter]] = {k: defaultdict(Counter) for k in ("sizes", "modes", "formats")}
    for p, r in zip(paths, records):
        if "error" in r:
            continue
        label = listings[p][0][1]
        for key, counter, value in (("sizes", sizes, r["size"]), ("modes", modes, r["mode"]),
                                    ("formats", formats, r["format"])):
            counter[value] += 1
            per_class[key][label][value] += 1

    # Splits and classes.
    splits = index.counts()
    balance = {}
    for split, samples in index.splits.items():
        c, ok = splits[split], class_counts([s for s in samples if s.path in readable])
        balance[split] = round(c["fake"] / max(1, c["real"] + c["fake"]), 4)
        if not ok["real"] and not ok["fake"]:
            errors.append(f"split {split} has no readable image ({c['real'] + c['fake']} listed)")
        elif not ok["real"] or not ok["fake"]:
            errors.append(f"split {split} has only one class: {ok['real']} readable real and {ok['fake']} "
                          f"readable fake image(s)")
        elif min(ok.values()) < IMBALANCE_WARN * max(ok.values()):
            warnings.append(f"split {split} is imbalanced: {ok['real']} real vs {ok['fake']} fake")
    missing = [s for s in SPLITS if s not in index.splits]
    if missing:
        warnings.append(f"no {'/'.join(missing)} split: training will split validation off train, and a test "
                        "split is needed for an honest score (`fakeface data split` makes all three)")
    if unreadable:
        warnings.append(f"{len(unreadable)} unreadable file(s) (training skips them): e.g. "
                        f"{unreadable[0]['path']}: {unreadable[0]['reason']}")
    for key, by_label in per_class.items():
        shift = _distribution_shift(by_label)
        if shift > CLASS_SHIFT_WARN:
            top = {CLASS_NAMES[lab]: dict(by_label[lab].most_common(3)) for lab in (REAL, FAKE)}
            warnings.append(f"image {key} differ between classes (total variation {shift:.2f}): {top} - a "
                            "detector can learn the file instead of the face")
    for p, where in listings.items():
        if len({lab for _, lab in where}) > 1:
            errors.append(f"{p} is listed as both real and fake")
        if len(where) > len({s for s, _ in where}):
            warnings.append(f"{p} is listed twice in one split")

    # Duplicates and leaks: a leak is a group of identical / near-duplicate files (or one file listed twice)
    # that appears in more than one split.
    exact, near, components = _duplicates(records, near_duplicates, max_hamming)
    in_components = {k for comp in components for k in comp}
    listed_twice = [[k] for k, p in enumerate(paths) if k not in in_components and len(listings[p]) > 1]
    leaks = []
    leak_summary: Counter = Counter()
    leak_example: dict = {}
    for comp in components + listed_twice:
        where: dict[str, set[str]] = defaultdict(set)
        labels = set()
        for k in comp:
            for split, label in listings[paths[k]]:
                where[split].add(paths[k])
                labels.add(label)
        kind = "exact" if len({records[k].get("sha1") for k in comp}) == 1 else "near"
        if len(labels) > 1 and len(comp) > 1:
            (errors if kind == "exact" else warnings).append(
                f"{'identical' if kind == 'exact' else 'near-duplicate'} images labelled both real and fake: "
                + ", ".join(paths[k] for k in comp[:4]))
        if len(where) > 1:
            leaks.append({"kind": kind, "splits": {s: sorted(v) for s, v in sorted(where.items())}})
            key = (kind, " <-> ".join(sorted(where, key=_split_order)))
            leak_summary[key] += 1
            leak_example.setdefault(key, " ~ ".join(sorted({p for v in where.values() for p in v})[:3]))
    for (kind, between), n in sorted(leak_summary.items()):
        what = "identical" if kind == "exact" else "near-duplicate"
        errors.append(f"leak {between}: {n} group(s) of {what} images in more than one split, e.g. "
                      f"{leak_example[(kind, between)]}")

    def one_split(k: int) -> str | None:
        splits_of = {s for s, _ in listings[paths[k]]}
        return splits_of.pop() if len(splits_of) == 1 else None

    in_split_exact = sum(1 for idx in exact if len({one_split(k) for k in idx}) == 1 and one_split(idx[0]))
    in_split_near = sum(1 for i, j, _ in near if one_split(i) and one_split(i) == one_split(j))
    if in_split_exact:
        warnings.append(f"{in_split_exact} group(s) of identical files within a split (over-weighted in training)")
    if in_split_near:
        warnings.append(f"{in_split_near} near-duplicate pair(s) within a split")

    return {
        "path": str(index.root),
        "layout": index.layout,
        "labels": index.labels,
        "files": len(paths),
        "splits": splits,
        "balance": balance,  # fraction fake per split
        "unreadable": unreadable,
        "sizes": dict(sizes.most_common()),
        "modes": dict(modes.most_common()),
        "formats": dict(formats.most_common()),
        "by_class": {CLASS_NAMES[lab]: {key: dict(per_class[key][lab].most_common()) for key in per_class}
                     for lab in (REAL, FAKE)},
        "duplicates": {
            "exact": sorted(sorted(paths[k] for k in idx) for idx in exact),
            "near": sorted([*sorted((paths[i], paths[j])), d] for i, j, d in near),
        },
        "leaks": leaks,
        "hash": {"method": "dct-phash", "bits": hash_size * hash_size, "max_hamming": max_hamming}
        if near_duplicates else None,
        "errors": errors,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _split_order(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def _short(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _top(counts: Mapping[str, int], k: int = 3) -> str:
    items = list(counts.items())
    text = ", ".join(f"{v} {n}" for v, n in items[:k])
    return text + (f", +{len(items) - k} more" if len(items) > k else "") if items else "-"


def format_check_report(result: dict, examples: int = 5) -> str:
    """A few lines per section of a :func:`check_dataset` result, errors first."""
    root = result["path"]
    lines = [f"{root} ({result['layout']}; labels: {result['labels']}): {result['files']} file(s) checked in "
             f"{result['seconds']:.1f} s"]
    for title, items in (("ERRORS", result["errors"]), ("warnings", result["warnings"])):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines += [f"  - {item}" for item in items[:examples * 4]]
            if len(items) > examples * 4:
                lines.append(f"  ... and {len(items) - examples * 4} more")
    lines.append("splits: " + "; ".join(
        f"{s} {c['real']} real + {c['fake']} fake ({100 * result['balance'][s]:.0f}% fake)"
        for s, c in sorted(result["splits"].items(), key=lambda kv: _split_order(kv[0]))))
    lines.append(f"sizes: {_top(result['sizes'])} | modes: {_top(result['modes'])} | "
                 f"formats: {_top(result['formats'])}")
    if result["unreadable"]:
        lines.append(f"unreadable ({len(result['unreadable'])}):")
        lines += [f"  {_short(u['path'], root)}: {u['reason']}" for u in result["unreadable"][:examples]]
        if len(result["unreadable"]) > examples:
            lines.append(f"  ... and {len(result['unreadable']) - examples} more (--json lists every one)")
    dup = result["duplicates"]
    h = result["hash"]
    near_text = f"{len(dup['near'])} near-duplicate pair(s) (<= {h['max_hamming']} of {h['bits']} bits)" if h \
        else "near-duplicates not searched"
    lines.append(f"duplicates: {len(dup['exact'])} identical group(s), {near_text}; "
                 f"{len(result['leaks'])} leak(s) across splits")
    lines += [f"  = {' = '.join(_short(p, root) for p in g[:3])}" for g in dup["exact"][:examples]]
    lines += [f"  ~ {_short(a, root)} ~ {_short(b, root)} ({d} bits)" for a, b, d in dup["near"][:examples]]
    return "\n".join(lines)


# -- split ----------------------------------------------------------------------------------------------------
def _assign_groups(groups: list[list[int]], labels: list[int], valid: float, test: float,
                   seed: int) -> list[str]:
    """Split name per group: seeded, stratified by each group's majority class, groups never cut.

    Per class, ``round(fraction * n)`` images (at least 1) go to test and valid; groups are visited largest
    first, in seeded random order within a size, and each fills test, then valid, while it fits - so with
    single images the counts are exact, and a big group lands in train rather than overshoot a small split.
    """
    rng = np.random.default_rng(seed)
    order = sorted(rng.permutation(len(groups)).tolist(), key=lambda g: -len(groups[g]))  # stable: size, then rng
    group_class = [Counter(labels[k] for k in g).most_common(1)[0][0] for g in groups]
    out = ["train"] * len(groups)
    for c in (REAL, FAKE):
        n = sum(len(g) for g, gc in zip(groups, group_class) if gc == c)
        want = {s: (max(1, round(f * n)) if f > 0 else 0) for s, f in (("test", test), ("valid", valid))}
        if n - sum(want.values()) < 1:
            raise DataError(f"cannot split {n} {CLASS_NAMES[c]} image(s) into train/valid/test "
                            f"({1 - valid - test:.0%}/{valid:.0%}/{test:.0%}): too few images")
        for g in order:
            if group_class[g] != c:
                continue
            for split in ("test", "valid"):
                if 0 < len(groups[g]) <= want[split]:
                    out[g] = split
                    want[split] -= len(groups[g])
                    break
    return out


def _unique_names(samples: list[Sample]) -> tuple[dict[str, str], int]:
    """Output file name per source path: the source name, or ``stem_N`` when that name is already taken."""
    used: set[str] = set()
    names, renamed = {}, 0
    for s in sorted(samples, key=lambda s: s.path):
        src = Path(s.path)
        stem, suffix = src.stem, src.suffix.lower()
        name, k = stem, 0
        while name.lower() in used:  # case-insensitive: the copy may land on a case-insensitive file system
            k += 1
            name = f"{stem}_{k}"
        renamed += k > 0
        used.add(name.lower())
        names[s.path] = name + suffix
    return names, renamed


def _place(src: str, dst: Path, link: str) -> None:
    if link == "copy":
        shutil.copyfile(src, dst)
    elif link == "symlink":
        os.symlink(os.path.abspath(src), dst)
    else:
        try:
            os.link(src, dst)
        except OSError as e:
            raise DataError(f"cannot hard-link {src} to {dst} ({e.strerror or e}): hard links need one file "
                            "system; use link='copy' or 'symlink'") from e


def _require_empty(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file: choose a new folder (nothing was written)")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder {out} is not empty: choose a new folder (nothing was written)")
    for parent in out.parents:  # checked now, not after scanning every image
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(f"--out {out}: {parent} is a file, not a folder (nothing was written)")
            break


def split_dataset(path: str | os.PathLike, out: str | os.PathLike, valid: float = 0.1, test: float = 0.1,
                  seed: int = 0, link: str = "copy", near_dup_hamming: int = MAX_HAMMING,
                  hash_size: int = HASH_SIZE, workers: int | None = None, progress: Progress | None = None) -> dict:
    """Write every image under ``path`` into ``out`` in the Kaggle 140k layout, split train/valid/test.

    ``out/real_vs_fake/{train,valid,test}.csv`` (``,original_path,id,label,label_str,path``; label 1 = real,
    as in the 140k CSVs) and ``out/real_vs_fake/real-vs-fake/{split}/{real,fake}/``. The split is seeded and
    stratified by class; identical files and near-duplicates (pHash distance <= ``near_dup_hamming``, joined
    transitively) stay in one split. Unreadable files are left out and listed. Clashing file names get a
    ``_N`` suffix. ``link``: copy the files, or symlink / hard-link them. Refuses a non-empty ``out``; writes
    into a temporary folder beside it and renames it at the end, so a failed run leaves no half dataset.
    """
    if link not in LINK_MODES:
        raise DataError(f"link must be one of {', '.join(LINK_MODES)}, got {link!r}")
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise DataError(f"valid and test fractions must be >= 0 and sum to less than 1, got {valid} and {test}")
    src_root, out = Path(path).expanduser().resolve(), Path(out).expanduser().resolve()
    _require_empty(out)
    if src_root.is_dir() and out.is_relative_to(src_root):
        raise DataError(f"--out {out} is inside the dataset {src_root}: its copies would be read back as part of "
                        "the dataset next time; choose a folder outside it")

    index = discover(src_root)
    label_of: dict[str, int] = {}
    for samples in index.splits.values():
        for s in samples:
            if label_of.setdefault(s.path, s.label) != s.label:
                raise DataError(f"{s.path} is listed as both real and fake")
    samples = [Sample(p, lab) for p, lab in sorted(label_of.items())]
    records = scan_files([s.path for s in samples], hash_size, workers, progress)
    skipped = [{"path": s.path, "reason": r["error"]} for s, r in zip(samples, records) if "error" in r]
    kept = [k for k, r in enumerate(records) if "error" not in r]
    samples, records = [samples[k] for k in kept], [records[k] for k in kept]

    _, _, components = _duplicates(records, True, near_dup_hamming)
    grouped = {k for comp in components for k in comp}
    groups = components + [[k] for k in range(len(samples)) if k not in grouped]
    labels = [s.label for s in samples]
    assignment = _assign_groups(groups, labels, valid, test, seed)
    split_of = {k: split for g, split in zip(groups, assignment) for k in g}
    names, renamed = _unique_names(samples)

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    root = tmp / "real_vs_fake"
    rows: dict[str, list[list]] = {s: [] for s in SPLITS}
    try:
        for split in SPLITS:
            for cls in CLASS_NAMES:
                (root / "real-vs-fake" / split / cls).mkdir(parents=True)
        for k, s in enumerate(samples):
            split, cls, name = split_of[k], CLASS_NAMES[s.label], names[s.path]
            rel = f"{split}/{cls}/{name}"
            _place(s.path, root / "real-vs-fake" / rel, link)
            # The 140k CSVs say label 1 = real, 0 = fake.
            rows[split].append([s.path, Path(name).stem, 1 if s.label == REAL else 0, cls, rel])
        for split, split_rows in rows.items():
            with open(root / f"{split}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["", "original_path", "id", "label", "label_str", "path"])
                w.writerows([i, *row] for i, row in enumerate(sorted(split_rows, key=lambda r: r[-1])))
        out.parent.mkdir(parents=True, exist_ok=True)
        _require_empty(out)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    counts = {split: {"real": 0, "fake": 0} for split in SPLITS}
    for k, s in enumerate(samples):
        counts[split_of[k]][CLASS_NAMES[s.label]] += 1
    back = discover(out)
    if back.layout != "140k-csv" or {s: c for s, c in counts.items() if c["real"] + c["fake"]} != back.counts():
        raise RuntimeError(f"the split written to {out} does not read back: {back.describe()}")  # a bug, not data
    return {
        "out": str(out / "real_vs_fake"),
        "counts": counts,
        "groups": len(components),  # near-duplicate / identical groups kept together
        "grouped_images": len(grouped),
        "renamed": renamed,
        "skipped": skipped,
        "link": link,
        "seed": seed,
        "next": f"fakeface data check {shlex.quote(str(out / 'real_vs_fake'))}",
    }


# -- the Kaggle 140k dataset ----------------------------------------------------------------------------------
def _kaggle_download(dataset: str, to: Path) -> Path:
    """Download ``dataset``'s zip archive into ``to`` with the official client; the only network call here."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as e:
        raise DataError(KAGGLE_MISSING) from e
    except (OSError, ValueError, KeyError, SystemExit) as e:  # older clients authenticate on import
        raise DataError(KAGGLE_NO_CREDENTIALS) from e
    api = KaggleApi()
    try:
        api.authenticate()
    except (OSError, ValueError, KeyError, SystemExit) as e:  # some versions print and exit(1)
        raise DataError(KAGGLE_NO_CREDENTIALS) from e
    api.dataset_download_files(dataset, path=str(to), unzip=False, quiet=False)
    archive = to / f"{dataset.split('/')[-1]}.zip"
    if not archive.is_file():
        zips = sorted(to.glob("*.zip"), key=lambda p: p.stat().st_mtime)
        if not zips:
            raise DataError(f"the Kaggle client finished but left no .zip archive in {to}")
        archive = zips[-1]
    return archive


def _find_dataset_dir(folder: Path) -> Path:
    """The folder holding ``real-vs-fake/`` in an unpacked archive (shallowest match)."""
    for depth in range(4):
        hits = sorted(p for p in folder.glob("/".join(["*"] * depth + ["real-vs-fake"])) if p.is_dir())
        if hits:
            return hits[0].parent
    raise DataError("the archive has no real-vs-fake/ folder: not the 140k Real and Fake Faces layout")


def install_archive(zip_path: str | os.PathLike, to: str | os.PathLike, expected: dict | None = None,
                    progress: Progress | None = None) -> dict:
    """Unpack a 140k archive into ``to/real_vs_fake`` and verify it; returns counts and the next command.

    The Kaggle archive holds ``train.csv valid.csv test.csv`` beside ``real_vs_fake/real-vs-fake/``; they are
    moved into ``real_vs_fake/`` so that :func:`~fakeface.data.discover` reads the CSVs. Every file a CSV lists
    must exist, and the counts must match ``expected`` ({split: {"real": n, "fake": n}}; None: the full
    dataset's 100k/20k/20k, half of each class; only the splits named are checked). Unpacks into a temporary
    folder first: a failed check leaves nothing in ``to/real_vs_fake``.
    """
    zip_path, to = Path(zip_path).expanduser(), Path(to).expanduser()
    expected = EXPECTED_140K if expected is None else expected
    if not zip_path.is_file():
        raise FileNotFoundError(f"archive not found: {zip_path}")
    if not zipfile.is_zipfile(zip_path):
        raise DataError(f"{zip_path} is not a zip archive (an interrupted download?)")
    target = to / "real_vs_fake"
    _require_empty(target)
    to.mkdir(parents=True, exist_ok=True)
    staging = to / f".real_vs_fake.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for k, m in enumerate(members):
                zf.extract(m, staging / "unpacked")  # zipfile drops absolute paths and '..' (no zip slip)
                if progress and (k % 1000 == 999 or k == len(members) - 1):
                    progress(k + 1, len(members))
        found = _find_dataset_dir(staging / "unpacked")
        dataset = staging / "real_vs_fake"
        dataset.mkdir()
        os.replace(found / "real-vs-fake", dataset / "real-vs-fake")
        for split in SPLITS:
            csv_path = next((d / f"{split}.csv" for d in (found, *found.parents) if (d / f"{split}.csv").is_file()
                             and d.is_relative_to(staging)), None)
            if csv_path is None:
                raise DataError(f"the archive has no {split}.csv: not the 140k Real and Fake Faces layout")
            os.replace(csv_path, dataset / f"{split}.csv")
        result = _verify_140k(dataset, expected)
        shutil.rmtree(staging / "unpacked")
        os.replace(dataset, target)
        staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result["root"] = str(target)
    result["next"] = f"fakeface train --data {shlex.quote(str(target))} --out runs/140k"
    return result


def _verify_140k(root: Path, expected: Mapping[str, Mapping[str, int]]) -> dict:
    index = discover(root)
    if index.layout != "140k-csv":
        raise DataError(f"{root} does not read as the 140k layout with its CSVs (read as {index.layout})")
    listed = {s.path for samples in index.splits.values() for s in samples}
    missing = sorted(p for p in listed if not os.path.isfile(p))
    if missing:
        raise DataError(f"the archive is incomplete: {len(missing)} file(s) listed in the CSVs are missing, e.g. "
                        f"{_short(missing[0], str(root / 'real-vs-fake'))}")
    counts = index.counts()
    wrong = [f"{split} {c.get('real', 0)} real + {c.get('fake', 0)} fake (found "
             f"{counts.get(split, {}).get('real', 0)} + {counts.get(split, {}).get('fake', 0)})"
             for split, c in expected.items() if counts.get(split, {"real": 0, "fake": 0}) != dict(c)]
    if wrong:
        raise DataError("unexpected image counts: expected " + "; ".join(wrong))
    on_disk = sum(1 for _ in _image_files(root / "real-vs-fake"))
    return {"counts": counts, "unlisted": on_disk - len(listed)}


def _image_files(folder: Path) -> Iterable[Path]:
    for dirpath, _, filenames in walk(folder):
        for name in filenames:
            if is_image_file(name):
                yield Path(dirpath) / name


def download_140k(to: str | os.PathLike, expected: dict | None = None, dataset: str = KAGGLE_DATASET,
                  keep_archive: bool = False, progress: Progress | None = None) -> dict:
    """Download the Kaggle "140k Real and Fake Faces" dataset into ``to`` and verify it.

    Needs ``pip install kaggle`` and a Kaggle API token (~/.kaggle/kaggle.json, or KAGGLE_USERNAME and
    KAGGLE_KEY); raises :class:`~fakeface.data.DataError` with one line saying which is missing. The archive
    (~4 GB) is deleted after a verified install unless ``keep_archive``. Returns :func:`install_archive`'s
    dict: ``counts``, ``root`` and ``next``, the command to run next.
    """
    to = Path(to).expanduser()
    _require_empty(to / "real_vs_fake")
    to.mkdir(parents=True, exist_ok=True)
    archive = _kaggle_download(dataset, to)
    result = install_archive(archive, to, expected, progress)
    if not keep_archive:
        archive.unlink()
    result["archive"] = str(archive) if keep_archive else None
    return result

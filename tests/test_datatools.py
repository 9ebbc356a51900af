"""Dataset check, 140k-layout split and archive install, on small datasets with planted problems."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakeface import FAKE, REAL
from fakeface.data import DataError, discover
from fakeface.datatools import (
    KAGGLE_NO_CREDENTIALS,
    check_dataset,
    download_140k,
    format_check_report,
    install_archive,
    near_pairs,
    phash_bits,
    split_dataset,
)


def blob(seed: int, size: int = 96) -> Image.Image:
    """Random detail at every scale the 256-bit pHash looks at (a 6x6 grid upsampled is too smooth: its high DCT
    coefficients are noise, and a re-encoded copy moves ~25 bits), plus a little pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    coarse = coarse.resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(coarse).astype(np.int16) + rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}) | kw)
    return path


def near_copy(src: Path, dst: Path) -> Path:
    """What a scraper does to an image: shrink it by 10% and re-encode it as a lower-quality JPEG."""
    img = Image.open(src).convert("RGB")
    return save(img.resize((img.width * 9 // 10, img.height * 9 // 10), Image.Resampling.BICUBIC), dst, quality=70)


# -- check ----------------------------------------------------------------------------------------------------
@pytest.fixture
def planted(tmp_path) -> tuple[Path, dict[str, Path]]:
    """A train/valid/test folder dataset with exactly these problems (and nothing else wrong)."""
    root = tmp_path / "ds"
    seed = iter(range(10_000))
    for split, n in (("train", 6), ("valid", 3), ("test", 3)):
        for cls in ("real", "fake"):
            for i in range(n):
                save(blob(next(seed)), root / split / cls / f"{cls[0]}{i}.jpg")
    p = {
        "exact_in_split": root / "train" / "real" / "copy_of_r0.jpg",
        "exact_leak": root / "test" / "real" / "copy_of_train_r1.jpg",
        "near_leak": root / "test" / "fake" / "resized_train_f2.jpg",
        "near_in_split": root / "valid" / "real" / "resized_r0.jpg",
        "corrupt": root / "train" / "fake" / "corrupt.jpg",
        "grey": root / "train" / "real" / "grey.png",
    }
    shutil.copyfile(root / "train" / "real" / "r0.jpg", p["exact_in_split"])
    shutil.copyfile(root / "train" / "real" / "r1.jpg", p["exact_leak"])
    near_copy(root / "train" / "fake" / "f2.jpg", p["near_leak"])
    near_copy(root / "valid" / "real" / "r0.jpg", p["near_in_split"])
    good = io.BytesIO()
    blob(next(seed)).save(good, "JPEG")
    p["corrupt"].write_bytes(good.getvalue()[:300])  # a download cut short
    save(blob(next(seed)).convert("L"), p["grey"])
    return root, p


def test_check_finds_exactly_the_planted_problems(planted):
    root, p = planted
    r = check_dataset(root, workers=0)
    assert r["layout"] == "folders"
    assert r["splits"] == {"train": {"real": 8, "fake": 7}, "valid": {"real": 4, "fake": 3},
                           "test": {"real": 4, "fake": 4}}
    assert r["unreadable"] == [{"path": str(p["corrupt"]), "reason": r["unreadable"][0]["reason"]}]
    assert "corrupt or truncated" in r["unreadable"][0]["reason"]
    assert r["modes"] == {"RGB": 28, "L": 1} and r["formats"] == {"JPEG": 28, "PNG": 1}
    assert r["sizes"] == {"96x96": 27, "86x86": 2}
    assert r["duplicates"]["exact"] == sorted([sorted([str(root / "train/real/r0.jpg"), str(p["exact_in_split"])]),
                                               sorted([str(root / "train/real/r1.jpg"), str(p["exact_leak"])])])
    near = {tuple(sorted(pair[:2])) for pair in r["duplicates"]["near"]}
    assert near == {tuple(sorted([str(root / "train/fake/f2.jpg"), str(p["near_leak"])])),
                    tuple(sorted([str(root / "valid/real/r0.jpg"), str(p["near_in_split"])]))}
    assert all(0 <= d <= r["hash"]["max_hamming"] for *_, d in r["duplicates"]["near"])
    # Leaks: both cross-split groups, nothing within a split.
    assert sorted(leak["kind"] for leak in r["leaks"]) == ["exact", "near"]
    assert all(set(leak["splits"]) == {"train", "test"} for leak in r["leaks"])
    assert len(r["errors"]) == 2 and all(e.startswith("leak train <-> test") for e in r["errors"])
    assert any("unreadable" in w for w in r["warnings"])
    assert any("identical files within a split" in w for w in r["warnings"])
    assert any("near-duplicate pair(s) within a split" in w for w in r["warnings"])
    json.dumps(r)  # what the CLI prints with --json

    report = format_check_report(r)
    assert report.index("ERRORS (2)") < report.index("splits:") and "corrupt.jpg" in report
    many = {**r, "unreadable": [{"path": str(root / f"train/real/x{i}.jpg"), "reason": "empty file (0 bytes)"}
                                for i in range(6)]}
    shown = format_check_report(many, examples=5).split("unreadable (6):\n")[1].splitlines()
    assert [line.strip().split(":")[0] for line in shown[:5]] == [f"train/real/x{i}.jpg" for i in range(5)]
    assert shown[5] == "  ... and 1 more (--json lists every one)"


def test_distinct_images_are_not_near_duplicates(tmp_path):
    for i in range(40):
        save(blob(i), tmp_path / ("real" if i % 2 else "fake") / f"{i}.jpg")
    r = check_dataset(tmp_path, workers=0)
    assert r["duplicates"] == {"exact": [], "near": []} and r["leaks"] == [] and r["errors"] == []


def test_classes_stored_differently_are_warned_about(tmp_path):
    """Real PNGs vs fake JPEGs: a detector can learn the format. Not an error, but said out loud."""
    for i in range(6):
        save(blob(i), tmp_path / "real" / f"{i}.png")
        save(blob(100 + i), tmp_path / "fake" / f"{i}.jpg")
    shutil.copyfile(tmp_path / "real" / "0.png", tmp_path / "real" / "copy.png")
    r = check_dataset(tmp_path, near_duplicates=False, workers=0)
    assert r["by_class"]["real"]["formats"] == {"PNG": 7} and r["by_class"]["fake"]["formats"] == {"JPEG": 6}
    assert any(w.startswith("image formats differ between classes (total variation 1.00)") for w in r["warnings"])
    assert r["errors"] == [] and r["hash"] is None and r["duplicates"]["near"] == []
    assert len(r["duplicates"]["exact"]) == 1  # identical bytes are found without the perceptual hash
    assert "near-duplicates not searched" in format_check_report(r)


def test_one_class_split_and_file_listed_twice_are_errors(tmp_path):
    imgs = [save(blob(i), tmp_path / "img" / f"{i}.jpg") for i in range(5)]
    manifest = tmp_path / "list.csv"
    rows = [(imgs[0], "real", "train"), (imgs[1], "fake", "train"), (imgs[2], "real", "test"),
            (imgs[3], "real", "test"), (imgs[0], "real", "test")]  # imgs[0] in train and test; test all real
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *((str(a), b, c) for a, b, c in rows)])
    r = check_dataset(manifest, workers=0)
    assert any(e.startswith("split test has only one class") for e in r["errors"])
    assert any(e.startswith("leak train <-> test") and "0.jpg" in e for e in r["errors"])
    assert len(r["errors"]) == 2


def test_check_in_worker_processes_matches_and_reports_progress(planted):
    root, _ = planted
    seen = []
    pooled = check_dataset(root, workers=2, progress=lambda done, total: seen.append((done, total)))
    single = check_dataset(root, workers=0)
    for key in ("splits", "unreadable", "sizes", "modes", "formats", "duplicates", "leaks", "errors"):
        assert pooled[key] == single[key], key
    assert seen[-1] == (30, 30) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_check_on_the_real_sample(sample_root):
    r = check_dataset(sample_root, workers=0)
    assert r["layout"] == "140k-csv" and r["files"] == 1700
    assert "label 1 = real" in r["labels"] and "label 1 = real" in format_check_report(r)  # the CSVs' convention
    assert r["sizes"] == {"256x256": 1700} and r["modes"] == {"RGB": 1700} and r["formats"] == {"JPEG": 1700}
    assert r["errors"] == [] and r["leaks"] == [] and r["unreadable"] == []


def test_near_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    bits = rng.random((1500, 256)) < rng.uniform(0.1, 0.9, 256)  # skewed bits, like aligned faces
    for k in range(0, 200, 2):  # plant close copies at distances 0..40
        flip = rng.choice(256, size=k // 5, replace=False)
        bits[k + 1] = bits[k]
        bits[k + 1, flip] ^= True
    packed = np.packbits(bits, axis=1)
    dist = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    for max_hamming in (0, 3, 16, 30):
        i, j, d = near_pairs(packed, 256, max_hamming)
        a, b = np.nonzero(np.triu(dist <= max_hamming, 1))
        assert list(zip(i.tolist(), j.tolist())) == list(zip(a.tolist(), b.tolist()))
        assert d.tolist() == dist[a, b].tolist()
    with pytest.raises(ValueError):
        near_pairs(packed, 256, 128)


def test_phash_sees_reencoded_copies_not_other_images(tmp_path):
    src = save(blob(1, 256), tmp_path / "a.jpg")
    copy = near_copy(src, tmp_path / "b.jpg")
    h = [phash_bits(Image.open(f)) for f in (src, copy, save(blob(2, 256), tmp_path / "c.jpg"))]
    assert h[0].shape == (256,) and (h[0] != h[1]).sum() <= 8 and (h[0] != h[2]).sum() >= 64


# -- split ----------------------------------------------------------------------------------------------------
@pytest.fixture
def flat(tmp_path) -> tuple[Path, list[Path]]:
    """real/{a,b}/ with clashing names and one near-duplicate group of 3, fake/ with names clashing with real/."""
    root = tmp_path / "flat"
    for i in range(10):
        save(blob(i), root / "real" / "a" / f"img{i:02d}.jpg")
        save(blob(100 + i), root / "real" / "b" / f"img{i:02d}.jpg")
    for i in range(20):
        save(blob(200 + i), root / "fake" / f"img{i:02d}.jpg")
    group = [save(blob(999), root / "real" / "a" / "grp.jpg")]
    group.append(near_copy(group[0], root / "real" / "b" / "grp_small.jpg"))
    group.append(save(Image.open(group[0]), root / "real" / "grp_q.jpg", quality=60))
    (root / "fake" / "bad.jpg").write_bytes(b"not an image")
    return root, group


def _rows(out: Path) -> dict[str, list[dict]]:
    rows = {}
    for split in ("train", "valid", "test"):
        with open(out / "real_vs_fake" / f"{split}.csv", newline="") as f:
            rows[split] = list(csv.DictReader(f))
    return rows


def test_split_writes_the_140k_layout_and_reads_back(flat, tmp_path):
    root, group = flat
    out = tmp_path / "out"
    r = split_dataset(root, out, valid=0.2, test=0.2, seed=0, workers=0)
    # 23 real (a group of 3 + 20) and 20 fake: round(0.2 n) per class in valid and test, the group kept whole.
    assert r["counts"] == {"train": {"real": 13, "fake": 12}, "valid": {"real": 5, "fake": 4},
                           "test": {"real": 5, "fake": 4}}
    assert r["groups"] == 1 and r["grouped_images"] == 3
    assert r["skipped"] == [{"path": str(root / "fake" / "bad.jpg"), "reason": "not an image (unrecognised format)"}]
    assert r["renamed"] == 20  # real/a and real/b both clash with fake/img00..09; real/b also with real/a

    index = discover(out)
    assert index.layout == "140k-csv"
    assert index.counts() == r["counts"]
    assert all(s.label == (REAL if "/real/" in s.path else FAKE) for v in index.splits.values() for s in v)
    header = (out / "real_vs_fake" / "train.csv").read_text().splitlines()[0]
    assert header == ",original_path,id,label,label_str,path"
    rows = _rows(out)
    ids = [row["id"] for v in rows.values() for row in v]
    assert len(ids) == len(set(ids)) == 43
    for split, split_rows in rows.items():
        for i, row in enumerate(split_rows):
            assert row[""] == str(i) and row["label"] == {"real": "1", "fake": "0"}[row["label_str"]]
            assert row["path"] == f"{split}/{row['label_str']}/{row['id']}.jpg"
            assert (out / "real_vs_fake" / "real-vs-fake" / row["path"]).is_file()
            assert f"/{row['label_str']}/" in row["original_path"]
    where = {row["original_path"]: split for split, v in rows.items() for row in v}
    assert len({where[str(p)] for p in group}) == 1  # the near-duplicate group did not cross splits

    check = check_dataset(out, workers=0)
    assert check["errors"] == [] and check["leaks"] == []
    assert len(check["duplicates"]["near"]) >= 2  # the group is still there, inside one split


def test_split_is_seeded(flat, tmp_path):
    root, _ = flat
    runs = [split_dataset(root, tmp_path / f"out{k}", seed=seed, valid=0.2, test=0.2, workers=0)
            for k, seed in enumerate((0, 0, 1))]
    tests = [{row["original_path"] for row in _rows(Path(r["out"]).parent)["test"]} for r in runs]
    assert tests[0] == tests[1] and tests[0] != tests[2]
    assert (Path(runs[0]["out"]) / "train.csv").read_bytes() == (Path(runs[1]["out"]) / "train.csv").read_bytes()


def test_split_refuses_a_non_empty_out_and_bad_arguments(flat, tmp_path):
    root, _ = flat
    out = tmp_path / "busy"
    (out / "x").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not empty"):
        split_dataset(root, out, workers=0)
    assert os.listdir(out) == ["x"]
    with pytest.raises(DataError, match="link"):
        split_dataset(root, tmp_path / "o1", link="move")
    with pytest.raises(DataError, match="sum to less than 1"):
        split_dataset(root, tmp_path / "o2", valid=0.5, test=0.5)
    with pytest.raises(DataError, match="inside the dataset"):
        split_dataset(root, root / "split")
    tiny = tmp_path / "tiny"
    for i, cls in enumerate(("real", "fake", "real", "fake")):
        save(blob(i), tiny / cls / f"{i}.jpg")
    with pytest.raises(DataError, match="too few"):
        split_dataset(tiny, tmp_path / "o3", workers=0)
    assert not (tmp_path / "o3").exists()


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_split_links_instead_of_copying(flat, tmp_path, link):
    root, _ = flat
    r = split_dataset(root, tmp_path / "out", link=link, workers=0)
    row = _rows(tmp_path / "out")["train"][0]
    dst = Path(r["out"]) / "real-vs-fake" / row["path"]
    if link == "symlink":
        assert dst.is_symlink() and dst.resolve() == Path(row["original_path"]).resolve()
    else:
        assert not dst.is_symlink() and dst.stat().st_ino == Path(row["original_path"]).stat().st_ino


# -- the 140k archive -----------------------------------------------------------------------------------------
def make_archive(sample_root: Path, zip_path: Path, per_class: int = 2,
                 drop: str | None = None) -> tuple[dict, str | None]:
    """A small zip in the Kaggle archive's layout: {train,valid,test}.csv beside real_vs_fake/real-vs-fake/.

    ``drop`` ("valid/fake" ...): leave that folder's first image out of the zip, though its CSV lists it.
    """
    index = discover(sample_root)
    counts, dropped = {}, None
    with zipfile.ZipFile(zip_path, "w") as zf:
        for split, samples in index.splits.items():
            chosen = [s for cls in (REAL, FAKE) for s in [s for s in samples if s.label == cls][:per_class]]
            counts[split] = {"real": per_class, "fake": per_class}
            text = io.StringIO()
            w = csv.writer(text)
            w.writerow(["", "original_path", "id", "label", "label_str", "path"])
            for i, s in enumerate(chosen):
                rel = Path(s.path).relative_to(sample_root / "real_vs_fake" / "real-vs-fake").as_posix()
                w.writerow([i, s.meta["original_path"], Path(rel).stem, int(s.label == REAL), rel.split("/")[1], rel])
                if drop and rel.startswith(drop + "/") and dropped is None:
                    dropped = rel
                else:
                    zf.write(s.path, f"real_vs_fake/real-vs-fake/{rel}")
            zf.writestr(f"{split}.csv", text.getvalue())
    return counts, dropped


def test_install_archive_verifies_a_small_archive(sample_root, tmp_path):
    counts, _ = make_archive(sample_root, tmp_path / "faces.zip")
    to = tmp_path / "data"
    r = install_archive(tmp_path / "faces.zip", to, expected=counts)
    assert r["counts"] == counts and r["unlisted"] == 0
    assert r["next"] == f"fakeface train --data {to / 'real_vs_fake'} --out runs/140k"
    assert os.listdir(to) == ["real_vs_fake"]  # no staging folder left behind
    assert discover(to).layout == "140k-csv" and discover(to / "real_vs_fake").counts() == counts
    with pytest.raises(FileExistsError):
        install_archive(tmp_path / "faces.zip", to, expected=counts)


def test_install_archive_fails_clearly(sample_root, tmp_path):
    counts, dropped = make_archive(sample_root, tmp_path / "cut.zip", drop="valid/fake")
    assert dropped.startswith("valid/fake/")
    with pytest.raises(DataError, match=rf"1 file\(s\) listed in the CSVs are missing, e.g. {dropped}"):
        install_archive(tmp_path / "cut.zip", tmp_path / "a", expected=counts)
    assert os.listdir(tmp_path / "a") == []  # nothing half-installed
    make_archive(sample_root, tmp_path / "small.zip")
    with pytest.raises(DataError, match="expected train 50000 real"):
        install_archive(tmp_path / "small.zip", tmp_path / "b")  # the full dataset's counts by default
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not a zip"):
        install_archive(tmp_path / "broken.zip", tmp_path / "c")


def _fake_kaggle(monkeypatch, api_class) -> None:
    pkg, api, ext = (types.ModuleType(n) for n in ("kaggle", "kaggle.api", "kaggle.api.kaggle_api_extended"))
    ext.KaggleApi, pkg.api, api.kaggle_api_extended = api_class, api, ext
    for mod in (pkg, api, ext):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)


def test_download_without_the_kaggle_package_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "kaggle", None)  # makes `import kaggle...` raise ImportError
    with pytest.raises(DataError) as e:
        download_140k(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "pip install kaggle" in msg
    assert "~/.kaggle/kaggle.json" in msg and "KAGGLE_USERNAME" in msg and "KAGGLE_KEY" in msg


def test_download_without_credentials_says_where_they_go(monkeypatch, tmp_path):
    class NoCredentials:
        def authenticate(self):
            raise OSError("Could not find kaggle.json. Make sure it's located in /root/.kaggle.")

    _fake_kaggle(monkeypatch, NoCredentials)
    with pytest.raises(DataError) as e:
        download_140k(tmp_path)
    assert str(e.value) == KAGGLE_NO_CREDENTIALS and "\n" not in KAGGLE_NO_CREDENTIALS


def test_download_installs_what_the_client_fetched(monkeypatch, sample_root, tmp_path):
    counts, _ = make_archive(sample_root, tmp_path / "small.zip")
    calls = []

    class FakeApi:
        def authenticate(self):
            calls.append("auth")

        def dataset_download_files(self, dataset, path, unzip, quiet):
            calls.append(dataset)
            assert not unzip
            shutil.copyfile(tmp_path / "small.zip", Path(path) / "140k-real-and-fake-faces.zip")

    _fake_kaggle(monkeypatch, FakeApi)
    to = tmp_path / "data"
    r = download_140k(to, expected=counts)
    assert calls == ["auth", "xhlulu/140k-real-and-fake-faces"]
    assert r["counts"] == counts and r["next"].startswith(f"fakeface train --data {to / 'real_vs_fake'}")
    assert os.listdir(to) == ["real_vs_fake"]  # the archive is removed once verified

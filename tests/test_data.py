"""Dataset discovery for every layout, label mapping, and every kind of bad input."""

from __future__ import annotations

import csv
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_folder_dataset, noise_image
from fakeface import FAKE, REAL
from fakeface.augment import AugmentConfig
from fakeface.data import (
    DataError,
    FaceDataset,
    collate,
    discover,
    require_both_classes,
    split_off_validation,
)
from fakeface.images import ImageLoadError, load_image
from fakeface.preprocess import Preprocess


# -- the real 140k sample -------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["parent", "real_vs_fake", "real-vs-fake"])
def test_140k_layout_from_any_entry_folder(sample_root, where):
    path = {"parent": sample_root, "real_vs_fake": sample_root / "real_vs_fake",
            "real-vs-fake": sample_root / "real_vs_fake" / "real-vs-fake"}[where]
    index = discover(path)
    assert index.counts() == {"train": {"real": 650, "fake": 650}, "valid": {"real": 100, "fake": 100},
                              "test": {"real": 100, "fake": 100}}
    assert index.layout == "140k-csv"


def test_140k_labels_match_folder_names(sample_root):
    """The CSVs say label 1 = real; we say fake = 1. Fails if the conversion is missing or swapped."""
    index = discover(sample_root)
    for samples in index.splits.values():
        for s in samples:
            folder = Path(s.path).parent.name
            assert s.label == {"real": REAL, "fake": FAKE}[folder], s
            assert Path(s.path).is_file()


def test_140k_csv_given_directly_keeps_metadata(sample_root):
    index = discover(sample_root / "real_vs_fake" / "test.csv")
    samples = index.splits["train"]  # a manifest without a split column is one split
    assert len(samples) == 200
    assert {s.label for s in samples} == {REAL, FAKE}
    real = next(s for s in samples if "/real/" in s.path)
    assert real.label == REAL and real.meta["id"] in real.path


def test_140k_kaggle_archive_with_csvs_beside_the_folder(sample_root, tmp_path):
    """Kaggle's zip has train.csv ... at its top level, beside real_vs_fake/real-vs-fake/."""
    root = tmp_path / "kaggle"
    images = root / "real_vs_fake" / "real-vs-fake" / "test"
    shutil.copytree(sample_root / "real_vs_fake" / "real-vs-fake" / "test", images)
    shutil.copy(sample_root / "real_vs_fake" / "test.csv", root / "test.csv")
    index = discover(root)
    assert index.layout == "140k-csv"
    assert index.counts() == {"test": {"real": 100, "fake": 100}}
    assert all(Path(s.path).is_file() for s in index.splits["test"])


def test_140k_without_csvs(sample_root, tmp_path):
    root = tmp_path / "real_vs_fake"
    shutil.copytree(sample_root / "real_vs_fake" / "real-vs-fake" / "valid", root / "real-vs-fake" / "valid")
    for path in (root, root / "real-vs-fake"):
        index = discover(path)
        assert index.layout == "140k-folders"
        assert index.counts() == {"valid": {"real": 100, "fake": 100}}


# -- generic folders and manifests ----------------------------------------------------------------------------
def test_flat_real_fake_folders(tmp_path):
    root = make_folder_dataset(tmp_path / "flat", per_class=3, splits=("",))
    index = discover(root)
    assert index.counts() == {"train": {"real": 3, "fake": 3}}


def test_cnndetection_folders_nested_with_splits(tmp_path):
    root = tmp_path / "cnndet"
    for split in ("train", "val"):
        for cat in ("car", "cat"):
            make_folder_dataset(root / split / cat, per_class=2, splits=("",), class_dirs=("0_real", "1_fake"))
    index = discover(root)
    assert index.counts() == {"train": {"real": 4, "fake": 4}, "valid": {"real": 4, "fake": 4}}
    assert all(s.label == (FAKE if "1_fake" in s.path else REAL) for s in index.splits["train"])


@pytest.mark.parametrize("layout", ["split-above-class", "class-above-split"])
def test_split_folders_below_the_root_are_splits(tmp_path, layout):
    """n/x/{train,test}/{real,fake} (or n/x/{real,fake}/{train,test}): test images must never be trained on."""
    root = tmp_path / "n"
    if layout == "split-above-class":
        make_folder_dataset(root / "x", per_class=3, splits=("train", "test"))
    else:
        for split, n in (("train", 3), ("test", 2)):
            for cls in ("real", "fake"):
                make_folder_dataset(root / "x" / cls / split, per_class=n, splits=("",), class_dirs=("img",))
                for p in (root / "x" / cls / split / "img").iterdir():
                    p.rename(p.parent.parent / p.name)
                (root / "x" / cls / split / "img").rmdir()
    index = discover(root)
    want = {"train": 3, "test": 3 if layout == "split-above-class" else 2}
    assert index.counts() == {s: {"real": n, "fake": n} for s, n in want.items()}
    for split, samples in index.splits.items():
        assert all(f"/{split}/" in s.path for s in samples)
        assert all(s.label == (FAKE if "/fake/" in s.path else REAL) for s in samples)


def test_class_folders_outside_split_folders_are_refused(tmp_path):
    """real/ beside test/real/: would the top-level images be training or test data? Say so, do not guess."""
    root = make_folder_dataset(tmp_path / "mixed", per_class=2, splits=("", "test"))
    with pytest.raises(DataError, match=r"outside any train/valid/test folder.*mixed/(real|fake)"):
        discover(root)


def test_images_under_two_split_folders_are_refused(tmp_path):
    root = make_folder_dataset(tmp_path / "n" / "train" / "old" / "test", per_class=2, splits=("",))
    with pytest.raises(DataError, match="both train/ and test/"):
        discover(tmp_path / "n")
    assert discover(root).counts() == {"train": {"real": 2, "fake": 2}}  # pointed at one part, it reads


def test_labels_never_come_from_folder_order(tmp_path):
    """'fake' sorts before 'real'; a loader using folder order would map fake -> 0."""
    root = make_folder_dataset(tmp_path / "ds", per_class=2, splits=("train",))
    labels = {Path(s.path).parent.name: s.label for s in discover(root).splits["train"]}
    assert labels == {"real": REAL, "fake": FAKE}


def test_manifest_with_words_numbers_and_split(tmp_path):
    root = make_folder_dataset(tmp_path / "imgs", per_class=4, splits=("",))
    rows = [("real/000.jpg", "real", "train", "a"), ("fake/000.jpg", "FAKE", "train", "b"),
            ("real/001.jpg", "0", "val", "a"), ("fake/001.jpg", "1", "val", "b"),
            ("real/002.jpg", "maybe", "train", "a"), ("", "real", "train", "a")]
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "group"])
        w.writerows(rows)
    index = discover(manifest)
    assert index.counts() == {"train": {"real": 1, "fake": 1}, "valid": {"real": 1, "fake": 1}}
    assert {s.meta["group"] for s in index.splits["train"]} == {"a", "b"}
    assert any("skipped 2 row" in n for n in index.notes)  # the bad label and the empty path


def _manifest(path: Path, header: list[str], rows: list) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.mark.parametrize("fake_is", [1, 0])
def test_manifest_label_convention_is_decided_by_label_str_agreement(tmp_path, fake_is):
    """``label`` 0/1 with 1 = fake (the README's) beside a ``label_str`` must not be read as the 140k CSVs'
    1 = real; a manifest in the 140k convention still reads as such. Either way the index says which."""
    root = make_folder_dataset(tmp_path / "imgs", per_class=3, splits=("",))
    rows = [(f"{cls}/{i:03d}.jpg", int((cls == "fake") == bool(fake_is)), cls) for cls in ("real", "fake")
            for i in range(3)]
    rows.append(("real/002.jpg", int(not fake_is), "fake"))  # one row whose two columns disagree: skipped
    index = discover(_manifest(root / "m.csv", ["path", "label", "label_str"], rows))
    assert index.counts() == {"train": {"real": 3, "fake": 3}}
    assert all(s.label == (FAKE if "/fake/" in s.path else REAL) for s in index.splits["train"])
    assert f"label 1 = {'fake' if fake_is else 'real'}" in index.labels
    assert f"label 1 = {'fake' if fake_is else 'real'}" in index.describe()
    assert any("1 row(s) whose label and label_str disagree" in n for n in index.notes)


def test_manifest_label_str_that_names_no_class_leaves_label_in_charge(tmp_path):
    root = make_folder_dataset(tmp_path / "imgs", per_class=2, splits=("",))
    rows = [(f"{cls}/{i:03d}.jpg", int(cls == "fake"), f"photo {i}") for cls in ("real", "fake") for i in range(2)]
    index = discover(_manifest(root / "m.csv", ["path", "label", "label_str"], rows))
    assert all(s.label == (FAKE if "/fake/" in s.path else REAL) for s in index.splits["train"])
    assert index.splits["train"][0].meta["label_str"].startswith("photo")
    assert "label 1 = fake" in index.labels


def test_manifest_with_two_word_label_columns_skips_rows_where_they_differ(tmp_path):
    root = make_folder_dataset(tmp_path / "imgs", per_class=2, splits=("",))
    rows = [("real/000.jpg", "real", "real"), ("fake/000.jpg", "fake", "fake"), ("fake/001.jpg", "fake", "real")]
    index = discover(_manifest(root / "m.csv", ["path", "label", "label_str"], rows))
    assert index.counts() == {"train": {"real": 1, "fake": 1}}
    assert "checked against label_str" in index.labels
    assert any("1 row(s) whose label and label_str disagree" in n for n in index.notes)


def test_manifest_whose_label_columns_agree_either_way_equally_is_refused(tmp_path):
    root = make_folder_dataset(tmp_path / "imgs", per_class=2, splits=("",))
    rows = [("real/000.jpg", 0, "real"), ("fake/000.jpg", 1, "fake"),  # 1 = fake
            ("real/001.jpg", 1, "real"), ("fake/001.jpg", 0, "fake")]  # 1 = real
    with pytest.raises(DataError, match="cannot tell whether label 1 means fake or real"):
        discover(_manifest(root / "m.csv", ["path", "label", "label_str"], rows))


def test_manifest_without_needed_columns(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("file_name,kind\nx.jpg,real\n")
    with pytest.raises(DataError, match="need a path column"):
        discover(bad)


def test_a_manifest_without_usable_rows_says_so(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("path,label\n")
    with pytest.raises(DataError, match=r"^no labelled images in the manifest .*m\.csv: it has no usable rows$"):
        discover(bad)
    bad.write_text("path,label\n,1\nx.jpg,maybe\n")
    with pytest.raises(DataError, match=r"no usable rows \(m\.csv: skipped 2 row\(s\) with a missing path"):
        discover(bad)


def test_nothing_usable_is_one_clear_error(tmp_path):
    (tmp_path / "empty" / "stuff").mkdir(parents=True)
    (tmp_path / "empty" / "stuff" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="no labelled images found"):
        discover(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nope")


def test_non_image_files_are_noted_not_loaded(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", per_class=2, splits=("",))
    (root / "real" / "README.txt").write_text("not an image")
    index = discover(root)
    assert index.counts() == {"train": {"real": 2, "fake": 2}}
    assert any(".txt" in n for n in index.notes)


def test_one_class_and_empty_splits_are_refused(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", per_class=3, splits=("train",), class_dirs=("real",))
    (root / "train" / "fake").mkdir()  # an empty class
    samples = discover(root).splits["train"]
    with pytest.raises(DataError, match="only one class: 3 real and 0 fake"):
        require_both_classes(samples, "the training split")
    with pytest.raises(DataError, match="no images"):
        require_both_classes([], "the training split")


def test_validation_split_is_seeded_and_stratified(tmp_path):
    samples = discover(make_folder_dataset(tmp_path / "ds", per_class=20, splits=("",))).splits["train"]
    train1, valid1 = split_off_validation(samples, 0.2, seed=3)
    train2, valid2 = split_off_validation(samples, 0.2, seed=3)
    _, valid3 = split_off_validation(samples, 0.2, seed=4)
    assert valid1 == valid2 and valid1 != valid3
    assert sorted(s.label for s in valid1) == [REAL] * 4 + [FAKE] * 4
    assert not set(s.path for s in train1) & set(s.path for s in valid1)


# -- bad files ------------------------------------------------------------------------------------------------
def _png_bomb(path: Path, side: int = 100_000) -> None:
    """A valid PNG header claiming side x side pixels, with a tiny body."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    d = tmp_path / "bad"
    d.mkdir()
    good = noise_image(0, 64)
    good.save(d / "good.jpg")
    out = {"good": d / "good.jpg"}
    (d / "empty.jpg").write_bytes(b"")
    out["empty"] = d / "empty.jpg"
    data = (d / "good.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    out["truncated"] = d / "truncated.jpg"
    (d / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    out["corrupt"] = d / "garbage.jpg"
    (d / "text.png").write_text("I am not a picture")
    out["text"] = d / "text.png"
    _png_bomb(d / "bomb.png")
    out["bomb"] = d / "bomb.png"
    Image.new("RGB", (1, 40_000)).save(d / "strip.png")  # few pixels, but 256 x 10,240,000 once scaled
    out["strip"] = d / "strip.png"
    return out


@pytest.mark.parametrize("kind,reason", [("empty", "empty file"), ("truncated", "truncated"),
                                         ("corrupt", "corrupt|not an image"), ("text", "not an image"),
                                         ("bomb", "too large"), ("strip", "too large once scaled")])
def test_bad_files_give_one_clear_reason(bad_files, kind, reason):
    with pytest.raises(ImageLoadError, match=reason) as e:
        load_image(bad_files[kind])
    assert "\n" not in str(e.value)
    with pytest.raises(ImageLoadError):
        load_image(bad_files[kind].read_bytes())


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageLoadError, match="cannot read"):
        load_image(tmp_path / "gone.jpg")


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    if mode == "I;16":
        img = Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
        path = tmp_path / "img16.png"
    else:
        img = noise_image(1, 64).convert(mode)
        path = tmp_path / f"img.{'jpg' if mode in ('L', 'CMYK') else 'png'}"
        if mode == "P":
            img.info["transparency"] = 0
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (64, 64)
    if mode == "I;16":  # scaled to 8 bits, not clipped to white
        arr = np.asarray(out)
        assert arr.min() < 10 and arr.max() > 240 and len(np.unique(arr)) > 100


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (80, 40), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (40, 80)


def test_loader_skips_broken_files_and_keeps_the_rest(bad_files):
    from fakeface.data import Sample

    samples = [Sample(str(p), FAKE if i % 2 else REAL) for i, p in enumerate(bad_files.values())]
    ds = FaceDataset(samples, Preprocess(input_size=48, resize=48))
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (1, 3, 48, 48) and batch["image"].dtype == torch.uint8
    assert batch["index"].tolist() == [0]
    reasons = dict(batch["failures"])
    assert sorted(reasons) == list(range(1, len(samples)))
    assert "too large" in reasons[len(samples) - 2] and "too large once scaled" in reasons[len(samples) - 1]


def test_training_augmentation_is_reproducible_per_sample(tmp_path):
    from fakeface.data import Sample

    root = make_folder_dataset(tmp_path / "ds", per_class=2, splits=("",))
    samples = discover(root).splits["train"]
    aug = AugmentConfig(jpeg_p=1.0, blur_p=0.5, noise_p=0.5, resize_p=0.5, color_p=0.5, scale_p=0.5)
    pre = Preprocess(input_size=64, resize=80)
    a = FaceDataset(samples, pre, aug, seed=1)
    b = FaceDataset(samples, pre, aug, seed=1)
    assert torch.equal(a[0]["image"], b[0]["image"])
    a.set_epoch(1)
    assert not torch.equal(a[0]["image"], b[0]["image"])  # a new epoch draws new augmentations
    assert a[0]["image"].shape == (3, 64, 64)
    assert isinstance(samples[0], Sample)


# -- folders reached through links, folders that cannot be listed -------------------------------------------------
@pytest.fixture
def linked_dataset(tmp_path) -> tuple[Path, Path]:
    """A real/ + fake/ dataset whose fake/ holds a link to a folder elsewhere (2 more fakes) and a link back to
    its own parent (a loop), and whose real/ has a sub-folder that will not list: (dataset, that sub-folder)."""
    root = make_folder_dataset(tmp_path / "ds", per_class=2, splits=("",))
    elsewhere = make_folder_dataset(tmp_path / "elsewhere", per_class=2, splits=("",)) / "fake"
    (root / "fake" / "more").symlink_to(elsewhere, target_is_directory=True)
    (root / "fake" / "loop").symlink_to(root / "fake", target_is_directory=True)
    (root / "real" / "locked").mkdir()
    noise_image(9, 64).save(root / "real" / "locked" / "hidden.jpg")
    return root, root / "real" / "locked"


def refuse_to_list(monkeypatch, folder: Path) -> None:
    """Listing ``folder`` fails as it does without read permission (the tests run as root, whom no mode stops)."""
    scandir = os.scandir

    def guarded(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)
    monkeypatch.setattr(os, "scandir", guarded)


def test_a_dataset_follows_linked_folders_and_names_those_it_cannot_read(linked_dataset, monkeypatch):
    root, locked = linked_dataset
    refuse_to_list(monkeypatch, locked)
    index = discover(root)
    fakes = [s.path for s in index.splits["train"] if s.label == FAKE]
    assert len(fakes) == 4 and len(set(map(os.path.realpath, fakes))) == 4  # the linked two, and the loop ended
    assert len([s for s in index.splits["train"] if s.label == REAL]) == 2
    assert f"could not read the folder {locked}: Permission denied" in index.notes


def test_predict_inputs_follow_linked_folders_and_keep_a_row_for_one_it_cannot_read(linked_dataset, monkeypatch):
    from fakeface.predict import expand_inputs

    root, locked = linked_dataset
    refuse_to_list(monkeypatch, locked)
    paths = expand_inputs([root])
    assert len(paths) == 2 + 4 + 1 and str(locked) in paths
    with pytest.raises(ImageLoadError, match="cannot read this folder: Permission denied"):
        load_image(locked)


def test_a_file_that_cannot_be_opened_is_not_called_corrupt(bad_files, monkeypatch):
    import builtins

    opener = builtins.open

    def guarded(file, *args, **kwargs):  # as without read permission, which root (the tests' user) never meets
        if str(file) == str(bad_files["good"]):
            raise PermissionError(13, "Permission denied", str(file))
        return opener(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", guarded)
    with pytest.raises(ImageLoadError, match="^cannot read file: Permission denied$"):
        load_image(bad_files["good"])

"""`fakeface data ...` through the real command line."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import make_folder_dataset


def fakeface(*args):
    return subprocess.run([sys.executable, "-m", "fakeface", *map(str, args)], capture_output=True, text=True)


def test_data_check_passes_the_sample_and_flags_a_leak(sample_root, tmp_path):
    ok = fakeface("data", "check", sample_root)
    assert ok.returncode == 0, ok.stderr
    assert "train 650 real + 650 fake" in ok.stdout and "0 leak" in ok.stdout

    leaky = make_folder_dataset(tmp_path / "leaky", per_class=4, splits=("train", "test"))
    shutil.copy(leaky / "train" / "real" / "000.jpg", leaky / "test" / "real" / "copy.jpg")
    bad = fakeface("data", "check", leaky)
    assert bad.returncode == 1 and "leak" in bad.stdout.lower()


def test_data_check_finds_split_folders_below_the_root(tmp_path):
    make_folder_dataset(tmp_path / "n" / "x", per_class=3, splits=("train", "test"))
    res = fakeface("data", "check", tmp_path / "n", "--no-near-duplicates")
    assert res.returncode == 0, res.stderr
    assert "train 3 real + 3 fake" in res.stdout and "test 3 real + 3 fake" in res.stdout


def test_data_split_writes_the_140k_layout(tmp_path):
    flat = make_folder_dataset(tmp_path / "flat", per_class=20, splits=("",))
    res = fakeface("data", "split", flat, "--out", tmp_path / "out", "--seed", "1")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "real_vs_fake" / "train.csv").is_file()
    again = fakeface("data", "split", flat, "--out", tmp_path / "out")
    assert again.returncode == 2 and "error:" in again.stderr  # refuses a non-empty folder


def test_data_download_without_the_client_is_one_clear_line(tmp_path):
    import importlib.util

    res = fakeface("data", "download", "140k", "--to", tmp_path / "dl")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    if importlib.util.find_spec("kaggle") is None:
        assert "pip install kaggle" in lines[0]

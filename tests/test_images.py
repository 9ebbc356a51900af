"""The fast decoding and resizing paths give Pillow's pixels: what training saw is what prediction sees."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image, ImageOps

from conftest import REPO, noise_image
from fakeface import images
from fakeface.images import ImageLoadError, load_image, load_pixels
from fakeface.preprocess import Preprocess, resize_pixels

DECODE_JPEG = simplejpeg.decode_jpeg  # unpatched, whatever a test's fixture does


def pillow_decode(data: bytes) -> np.ndarray:
    """The reference: Pillow alone, EXIF orientation applied, converted to RGB."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


@pytest.fixture
def decoder_calls(monkeypatch) -> list:
    """Records each simplejpeg decode that load_image makes (the function still runs)."""
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[0])
        return DECODE_JPEG(*args, **kwargs)

    monkeypatch.setattr(images.simplejpeg, "decode_jpeg", counting)
    return calls


def smooth_face_like(seed: int, size: int = 96) -> Image.Image:
    """Noise blurred by up-scaling: JPEG-friendly content with edges in every direction."""
    return noise_image(seed, size // 8).resize((size, size), Image.Resampling.BICUBIC)


def jpeg_bytes(img: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **options)
    return buf.getvalue()


def test_real_sample_jpegs_decode_to_pillows_pixels(sample_root, decoder_calls):
    files = sorted((sample_root / "real_vs_fake" / "real-vs-fake" / "test").glob("*/*.jpg"))[::10]
    assert len(files) >= 20
    for f in files:
        assert np.array_equal(np.asarray(load_image(f)), pillow_decode(f.read_bytes())), f
    assert len(decoder_calls) == len(files)  # every one took the fast path


@pytest.mark.parametrize("kind", ["4:2:0", "4:4:4", "4:2:2", "progressive", "grayscale", "odd size"])
def test_plain_jpegs_of_every_kind_take_the_fast_path_with_pillows_pixels(kind, decoder_calls):
    img = smooth_face_like(3, 96)
    options = {"quality": 80}
    if kind in ("4:2:0", "4:4:4", "4:2:2"):
        options["subsampling"] = kind
    elif kind == "progressive":
        options["progressive"] = True
    elif kind == "grayscale":
        img = img.convert("L")
    else:
        img = img.resize((77, 53))
    data = jpeg_bytes(img, **options)
    out = load_image(data)
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), pillow_decode(data))
    assert len(decoder_calls) == 1


def test_rotated_and_cmyk_jpegs_are_left_to_pillow(tmp_path, decoder_calls):
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = jpeg_bytes(smooth_face_like(4, 96).resize((96, 48)), exif=exif)
    cmyk = jpeg_bytes(smooth_face_like(5, 64).convert("CMYK"))
    for data in (rotated, cmyk):
        assert np.array_equal(np.asarray(load_image(data)), pillow_decode(data))
    assert load_image(rotated).size == (48, 96)
    assert decoder_calls == []


def test_slightly_damaged_jpeg_is_decided_by_pillow(decoder_calls):
    """Stray bytes before a marker: libjpeg warns, simplejpeg (strict) refuses, Pillow decodes as it always did."""
    data = jpeg_bytes(smooth_face_like(6, 64), quality=90)
    sos = data.index(b"\xff\xda")
    damaged = data[:sos] + b"\x00\x01\x02" + data[sos:]
    with pytest.raises(ValueError):
        DECODE_JPEG(damaged, "RGB", strict=True)
    assert np.array_equal(np.asarray(load_image(damaged)), pillow_decode(damaged))
    assert len(decoder_calls) == 1  # tried, refused, handed over


def test_truncated_jpeg_is_still_an_error_after_the_fast_path_refuses_it(decoder_calls):
    data = jpeg_bytes(smooth_face_like(7, 96), quality=90)
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(data[: len(data) * 2 // 3])
    assert len(decoder_calls) == 1


def test_large_jpeg_under_draft_keeps_the_reduced_scale_decode(decoder_calls):
    data = jpeg_bytes(smooth_face_like(8, 512), quality=90)
    assert load_image(data, min_side=200).size == (256, 256)  # DCT scaling 1/2 by Pillow's draft
    assert decoder_calls == []
    assert load_image(data, min_side=300).size == (512, 512) and len(decoder_calls) == 1


def test_pixels_are_the_images_pixels_with_the_same_errors(tmp_path):
    jpeg = jpeg_bytes(smooth_face_like(12, 64), quality=85)
    smooth_face_like(13, 64).convert("P").save(tmp_path / "face.png")
    for source in (jpeg, tmp_path / "face.png"):
        pixels = load_pixels(source)
        assert pixels.dtype == np.uint8 and pixels.shape == (64, 64, 3)
        assert np.array_equal(pixels, np.asarray(load_image(source)))
    for broken in (b"", jpeg[: len(jpeg) // 2], b"not a picture"):
        with pytest.raises(ImageLoadError) as from_pixels:
            load_pixels(broken)
        with pytest.raises(ImageLoadError) as from_image:
            load_image(broken)
        assert str(from_pixels.value) == str(from_image.value)


# -- resizing ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(160, 160), (224, 224), (384, 384), (100, 70)])
def test_resize_matches_pillows_filter_within_a_grey_level(sample_root, interpolation, size):
    files = sorted((sample_root / "real_vs_fake" / "real-vs-fake" / "valid").glob("*/*.jpg"))[:6]
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[interpolation]
    for f in files:
        img = load_image(f)
        ours = resize_pixels(np.asarray(img), size, interpolation).astype(int)
        pillow = np.asarray(img.resize(size, resample)).astype(int)
        assert ours.shape == pillow.shape == (size[1], size[0], 3)
        diff = np.abs(ours - pillow)
        assert diff.max() <= 2 and (diff > 0).mean() < 0.02, (f, diff.max(), (diff > 0).mean())


@pytest.mark.parametrize("interpolation", ["nearest", "lanczos"])
def test_other_filters_are_pillows_own(interpolation):
    img = smooth_face_like(9, 96)
    resample = {"nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}[interpolation]
    assert np.array_equal(resize_pixels(np.asarray(img), (60, 60), interpolation),
                          np.asarray(img.resize((60, 60), resample)))


@pytest.mark.parametrize("pre", [Preprocess(input_size=160, resize=160), Preprocess(input_size=64, resize=None),
                                 Preprocess(input_size=224, resize=256, eval_size=240, interpolation="bicubic")])
def test_eval_tensor_is_the_centre_crop_of_the_resized_image(pre):
    img = smooth_face_like(10, 200).resize((200, 150))
    resized = pre.resized(img, pre.crop_size)
    w, h = resized.size
    s = pre.crop_size
    assert min(w, h) == max(pre.resize or 150, s)
    expected = np.asarray(resized)[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    tensor = pre.eval_tensor(img)
    assert tensor.shape == (3, s, s) and tensor.is_contiguous()
    assert np.array_equal(tensor.numpy().transpose(1, 2, 0), expected)
    assert torch.equal(pre.eval_tensor(np.asarray(img)), tensor)  # pixels or image, the same view
    assert np.array_equal(np.asarray(pre.eval_image(img)), expected)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
@pytest.mark.parametrize("pre", [Preprocess(input_size=160, resize=160), Preprocess(input_size=352, resize=384)])
def test_resizing_in_a_decoding_thread_starts_no_thread_team(pre):
    """predict decodes in threads beside the model's OpenMP team: a parallel torch operator there would start a
    second team (one thread per core) that fights the model's for the same cores."""
    x = torch.randn(512, 512)
    _ = x @ x  # the main thread's team exists, as it does while a model runs
    img, seen = smooth_face_like(11, 256), {}

    def decode_thread():
        for _ in range(3):
            pre.eval_tensor(img)
        seen["tasks"], seen["self"] = set(os.listdir("/proc/self/task")), str(threading.get_native_id())

    before = set(os.listdir("/proc/self/task"))
    t = threading.Thread(target=decode_thread)
    t.start()
    t.join()
    # threads of earlier tests may end meanwhile (ONNX Runtime's, when a session is collected): look only for new
    assert seen["tasks"] - before == {seen["self"]}  # the decoding thread itself, nothing it started


def test_decode_benchmark_prints_ratios_that_follow_from_its_columns(sample_root):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "decode.py"), "--images", "8", "--rounds", "1",
                          "--sizes", "96", "384", "--data", str(sample_root)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    rows = {line[:16].strip(): line[16:].split() for line in out.splitlines()[2:]}
    assert list(rows) == ["decode", "resize to 96", "resize to 384"]
    for name, (ours, pillow, ratio, max_diff, mean_diff) in rows.items():
        assert float(ours) > 0 and float(pillow) > 0
        assert float(ratio) == pytest.approx(float(pillow) / float(ours), abs=0.01)
        assert int(max_diff) <= (0 if name == "decode" else 2) and float(mean_diff) < 0.05

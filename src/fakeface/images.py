"""Decoding images safely: one function every entry point (training, evaluation, prediction, the server) uses.

Whatever comes in - a path, bytes or a file object - either becomes an RGB ``PIL.Image`` with its EXIF
orientation applied, or raises :class:`ImageLoadError` with a one-line reason. Nothing here changes Pillow's
global settings (no ``LOAD_TRUNCATED_IMAGES``, no ``MAX_IMAGE_PIXELS``): limits are checked per call.

Plain JPEGs (YCbCr or grayscale, upright, decoded at full scale) are decoded by libjpeg-turbo through
simplejpeg: the same library and settings as Pillow's decoder, so the same pixels, faster because no Pillow
image object is made (``python benchmarks/decode.py`` measures both, with :func:`load_pixels`).
Anything simplejpeg reports as damaged, however slightly, goes to Pillow, which decides.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# What we look for when walking folders. Anything else in a folder of images is reported, not guessed at.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})

# 50 megapixels is ~7000x7000: far larger than any face photo we score, far smaller than a decompression
# bomb (a 1 KB PNG can claim 100k x 100k pixels).
DEFAULT_MAX_PIXELS = 50_000_000
# Scoring scales the shorter side to the model's size, so a 1 x 40,000 strip that passes the pixel limit would
# become gigabytes; no photo, panoramas included, is further apart than this.
MAX_ASPECT_RATIO = 25


class ImageLoadError(ValueError):
    """An input that is not a usable image. ``str(error)`` is the one-line reason."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(
    source: str | os.PathLike | bytes | BinaryIO, max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode ``source`` into an RGB image, upright according to its EXIF orientation.

    Handles grayscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit / float images. Raises
    :class:`ImageLoadError` for empty, truncated, corrupt, non-image and over-sized inputs; the size check
    reads only the header, so a decompression bomb is refused before its pixels are decoded.

    ``min_side``: a JPEG at least twice that size on both sides is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's
    DCT scaling, ``Image.draft``), never below ``min_side``: several times faster on large photos, within a grey
    level or so of the full decode after the resize (benchmarks/decode.py measures it). Other images are decoded
    whole.
    """
    img = _decode(source, max_pixels, min_side)
    return img if isinstance(img, Image.Image) else Image.fromarray(img)


def load_pixels(
    source: str | os.PathLike | bytes | BinaryIO, max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> np.ndarray:
    """:func:`load_image`'s pixels as an (H, W, 3) uint8 array (read-only where it comes from Pillow), with its
    checks and errors. A plain JPEG never becomes a Pillow image: moving its pixels into one and out again is
    two copies that :func:`load_image` pays and the evaluation view does not need."""
    img = _decode(source, max_pixels, min_side)
    return np.asarray(img) if isinstance(img, Image.Image) else img


def _decode(source, max_pixels: int | None, min_side: int | None) -> Image.Image | np.ndarray:
    """What :func:`load_image` says, as an RGB Pillow image or, for a plain JPEG, simplejpeg's array."""
    data = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageLoadError("empty file (0 bytes)")
        data = source
        fp: str | os.PathLike | BinaryIO = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        if os.path.isdir(source):
            try:
                os.scandir(source).close()
            except OSError as e:
                raise ImageLoadError(f"cannot read this folder: {e.strerror or e}") from e
            raise ImageLoadError("a folder, not an image file")
        try:
            size = os.path.getsize(source)
        except OSError as e:
            raise ImageLoadError(f"cannot read file: {e.strerror or e}") from e
        if size == 0:
            raise ImageLoadError("empty file (0 bytes)")
        fp = source
    else:
        fp = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageLoadError(
                    f"image too large: {width}x{height} = {width * height:,} pixels "
                    f"(limit {max_pixels:,})"
                )
            if max(width, height) > MAX_ASPECT_RATIO * max(min(width, height), 1):
                raise ImageLoadError(
                    f"image too large once scaled: {width}x{height} is a strip "
                    f"(the longer side may be at most {MAX_ASPECT_RATIO} times the shorter)"
                )
            if img.format == "JPEG":
                if min_side is not None:
                    img.draft(img.mode, (min_side, min_side))  # a no-op unless both sides are >= 2 * min_side
                if img.size == (width, height):  # decoded at full scale: simplejpeg can do it
                    fast = _decode_plain_jpeg(img, fp if data is None else data)
                    if fast is not None:
                        img.close()
                        return fast
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageLoadError("not an image (unrecognised format)") from e
    except Image.DecompressionBombError as e:  # Pillow's own cap, checked on open: say ours
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(pixels[1]):,} pixels" if pixels else "beyond what Pillow opens"
        limit = min(n for n in (max_pixels, 2 * Image.MAX_IMAGE_PIXELS) if n is not None)
        raise ImageLoadError(f"image too large: {size} (limit {limit:,})") from e
    except (PermissionError, FileNotFoundError) as e:  # the file, not its contents: say so
        raise ImageLoadError(f"cannot read file: {e.strerror or e}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(f"corrupt or truncated image: {e}") from e
    return to_rgb(img)


def _decode_plain_jpeg(img: Image.Image, source) -> np.ndarray | None:
    """``img`` (opened, not loaded) decoded by simplejpeg, or ``None`` where Pillow must decode it: a CMYK or
    rotated JPEG, a file object, or data that libjpeg-turbo reports as damaged in any way (``strict``)."""
    if img.mode not in ("RGB", "L") or img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        return None
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            source = f.read()
    elif not isinstance(source, (bytes, bytearray, memoryview)):
        return None
    try:
        pixels = simplejpeg.decode_jpeg(source, colorspace="RGB", fastdct=False, fastupsample=False, strict=True)
    except ValueError:
        return None
    return pixels


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB. 16-bit and float images are scaled to 0..255 by their range."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I") and arr.max(initial=0) > 255 else max(arr.max(initial=0), 1.0)
        if img.mode == "F":
            lo = arr.min(initial=0)
            arr, top = arr - lo, max(arr.max(initial=0) - lo, 1e-12)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")

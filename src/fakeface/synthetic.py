"""A synthetic real-vs-generated dataset, so that ``fakeface demo`` runs on a fresh machine with no downloads.

The two classes are drawn from one scene model and differ in a single place: how the coarse layer of the
scene reaches full resolution.

* **real**: every layer of the scene is rendered at full resolution, like a camera sampling a scene.
* **fake**: the coarse layer is rendered at half resolution and brought to full resolution the way a GAN
  generator does it - a stride-2 transposed convolution whose kernel is a nearest / bilinear interpolator
  plus a random "learned" perturbation - and then the fine texture is added at full resolution (StyleGAN's
  noise injection). The kernel's four polyphase components have slightly unequal gains, so flat regions get
  a faint period-2 checkerboard / stripe pattern, and the interpolator leaves spectral replicas: peaks at
  N/2 in the image's FFT, the trace that real GAN detectors learn (Wang et al. 2020; Frank et al. 2020).

Everything else - colours, brightness, contrast, shapes, texture, noise - comes from the same distribution
in both classes, so per-image colour statistics do not tell them apart and a detector must find the trace.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from fakeface import CLASS_NAMES, FAKE

SPLITS = ("train", "valid", "test")

# Rms gain mismatch between the four polyphase components of the fake up-sampler. At the scene's typical
# brightness (~115/255) this is a period-2 pattern of ~6-12 grey levels rms: several JPEG q90 quantisation
# steps of the top DCT coefficients, so it survives encoding and a small model trained from scratch learns it
# within a few epochs (about half this gain is too weak to learn that fast). It is a fine mesh at 3x zoom, hard to
# see at 1x, and changes no colour statistic.
TRACE_STRENGTH = (0.05, 0.10)

# Coarse-layer band limit, as a fraction of the full-resolution Nyquist frequency. Kept below the
# half-resolution Nyquist (0.5) so that rendering the coarse layer at half resolution loses (almost) nothing:
# the fake class must not be told apart by being blurrier, only by its up-sampling trace.
_COARSE_CUTOFF = 0.18

# Soft-edge widths of shapes as a fraction of the image side (1.5-4 px at 128 px): at least ~1 px at half
# resolution, so half-resolution shapes are not more aliased than full-resolution ones.
_EDGE_WIDTH = (0.012, 0.03)

_FILE_RE = re.compile(r"^\d{5}\.jpg$")


# --------------------------------------------------------------------------------------------------------
# Scene model
# --------------------------------------------------------------------------------------------------------


def _spectral_field(
    rng: np.random.Generator, n: int, channels: int, slope: float, cutoff: float | None
) -> np.ndarray:
    """Zero-mean, unit-std random fields with amplitude spectrum ~ 1/f**slope, shape (n, n, channels).

    Frequencies are measured in cycles per image side, so the same ``slope`` and ``cutoff`` (the sigma of a
    Gaussian low-pass, cycles per image) describe the same picture on any grid; ``cutoff=None`` keeps the
    whole band (the fine texture).
    """
    fy = np.fft.fftfreq(n)[:, None]  # cycles per pixel of this grid
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.sqrt(fy * fy + fx * fx) * n  # cycles per image: the same physical frequency on any grid
    f[0, 0] = 1.0
    amp = f ** (-slope)
    if cutoff is not None:
        amp = amp * np.exp(-0.5 * (f / cutoff) ** 2)
    amp[0, 0] = 0.0
    shape = (channels, n, n // 2 + 1)
    noise = rng.standard_normal((2, *shape), dtype=np.float32)
    spec = (noise[0] + 1j * noise[1]) * amp.astype(np.float32)
    field = np.fft.irfft2(spec, s=(n, n), axes=(1, 2))
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-12
    return np.moveaxis(field, 0, -1).astype(np.float32)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in 0..1) as an RGB float32 vector."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return (v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def _draw_scene_params(rng: np.random.Generator) -> dict:
    """Everything random about one scene, in resolution-free units, so it can be rendered on any grid.

    Scalars are Python floats and colours float32 arrays: NumPy 2 would promote the float32 pixel arrays
    to float64 when combined with a NumPy float64 scalar, doubling the rendering time.
    """
    base_hue = rng.random()
    shapes = []
    for _ in range(int(rng.integers(3, 9))):
        shapes.append(
            dict(
                centre=tuple(rng.uniform(-0.1, 1.1, 2).tolist()),
                axes=tuple(np.exp(rng.uniform(np.log(0.04), np.log(0.45), 2)).tolist()),
                angle=float(rng.uniform(0, np.pi)),
                colour=_hsv_to_rgb((base_hue + rng.normal(0, 0.25)) % 1.0, rng.uniform(0.05, 0.6),
                                   rng.uniform(0.15, 0.9)),
                alpha=float(rng.uniform(0.4, 1.0)),
                edge=float(rng.uniform(*_EDGE_WIDTH)),
                # A linear shading ramp across the shape: it looks lit rather than flat.
                shade=tuple(rng.normal(0, 0.12, 2).tolist()),
            )
        )
    face = None
    if rng.random() < 0.85:  # most images show a face-like figure; the rest are just scenes
        face = dict(
            centre=(float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.45, 0.6))),
            axes=(float(rng.uniform(0.18, 0.26)), float(rng.uniform(0.25, 0.34))),
            angle=float(rng.normal(0, 0.12)),
            skin=_hsv_to_rgb(rng.uniform(0.02, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.9)),
            hair=_hsv_to_rgb(rng.uniform(0.0, 0.12), rng.uniform(0.2, 0.7), rng.uniform(0.05, 0.6)),
            light=tuple(rng.normal(0, 0.2, 2).tolist()),
            edge=float(rng.uniform(*_EDGE_WIDTH)),
            eye_dy=float(rng.uniform(-0.12, -0.05)),
            eye_dx=float(rng.uniform(0.07, 0.1)),
            mouth_dy=float(rng.uniform(0.12, 0.18)),
        )
    return dict(
        background=_hsv_to_rgb(base_hue, rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.7)),
        gradient=rng.normal(0, 0.15, 3).astype(np.float32),
        gradient_angle=float(rng.uniform(0, 2 * np.pi)),
        field_slope=float(rng.uniform(0.6, 1.4)),
        field_gain=np.array([rng.uniform(0.04, 0.12)] + [rng.uniform(0.01, 0.04)] * 2, dtype=np.float32),
        shapes=shapes,
        face=face,
        coarse_seed=int(rng.integers(2**63)),
        vignette=float(rng.uniform(0.0, 0.25)),
    )


def _ellipse_mask(u: np.ndarray, v: np.ndarray, centre, axes, angle: float, edge: float) -> np.ndarray:
    """Soft (sigmoid-edged) ellipse, 1 inside, 0 outside; ``edge`` is the edge width in image-side units."""
    c, s = float(np.cos(angle)), float(np.sin(angle))
    du, dv = u - centre[0], v - centre[1]
    a = (c * du + s * dv) / axes[0]
    b = (-s * du + c * dv) / axes[1]
    r = np.sqrt(a * a + b * b)
    # (r - 1) * min(axes) approximates the signed distance to the outline in image-side units.
    # A logistic edge written with tanh: no overflow far from the outline, and no clipping pass needed.
    return 0.5 - 0.5 * np.tanh((r - 1.0) * (min(axes) / edge * 2.0))


def _blend(img: np.ndarray, colour: np.ndarray, mask: np.ndarray) -> None:
    img += mask[..., None] * (colour - img)


def _render_coarse(p: dict, n: int, full: int) -> np.ndarray:
    """The band-limited layer of the scene (background, light, shapes, face) on an n x n grid, float 0..1.

    ``full`` is the side of the final image; band limits are set relative to it, so a half-resolution
    rendering holds the same picture as a full-resolution one.
    """
    t = (np.arange(n, dtype=np.float32) + 0.5) / n  # pixel centres: the same scene on any grid
    v, u = np.meshgrid(t, t, indexing="ij")
    ramp = float(np.cos(p["gradient_angle"])) * (u - 0.5) + float(np.sin(p["gradient_angle"])) * (v - 0.5)
    img = p["background"][None, None, :] + ramp[..., None] * p["gradient"][None, None, :]
    # Its own generator, from a seed drawn with the scene: the caller's generator then advances by the
    # same amount in both classes, whatever grid the coarse layer is rendered on.
    field = _spectral_field(np.random.default_rng(p["coarse_seed"]), n, 3, p["field_slope"] + 1.0,
                            _COARSE_CUTOFF * full / 2)
    img = img + field * p["field_gain"]
    for sh in p["shapes"]:
        mask = _ellipse_mask(u, v, sh["centre"], sh["axes"], sh["angle"], sh["edge"]) * sh["alpha"]
        shade = 1.0 + sh["shade"][0] * (u - sh["centre"][0]) / sh["axes"][0] + sh["shade"][1] * (
            v - sh["centre"][1]) / sh["axes"][1]
        img += mask[..., None] * (sh["colour"] * shade[..., None] - img)
    f = p["face"]
    if f is not None:
        cx, cy = f["centre"]
        ax, ay = f["axes"]
        edge = f["edge"]
        hair = _ellipse_mask(u, v, (cx, cy - 0.08), (ax * 1.15, ay * 1.05), f["angle"], edge)
        _blend(img, f["hair"], hair)
        head = _ellipse_mask(u, v, (cx, cy + 0.02), (ax, ay * 0.92), f["angle"], edge)
        light = 1.0 + f["light"][0] * (u - cx) / ax + f["light"][1] * (v - cy) / ay
        _blend(img, f["skin"][None, None, :] * light[..., None], head)
        for side in (-1, 1):
            eye = _ellipse_mask(u, v, (cx + side * f["eye_dx"], cy + f["eye_dy"]), (0.035, 0.018), 0.0, edge)
            _blend(img, f["hair"] * 0.5, eye * 0.85)
        mouth = _ellipse_mask(u, v, (cx, cy + f["mouth_dy"]), (0.06, 0.014), 0.0, edge)
        _blend(img, f["skin"] * np.array([0.85, 0.45, 0.45], np.float32), mouth * 0.8)
        nose = _ellipse_mask(u, v, (cx, cy + 0.04), (0.015, 0.04), 0.0, edge)
        _blend(img, f["skin"] * 0.8, nose * 0.5)
    r2 = (u - 0.5) ** 2 + (v - 0.5) ** 2
    img *= (1.0 - p["vignette"] * r2 * 2.0)[..., None]
    return img.astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Capture paths: camera (real) and generator up-sampling (fake)
# --------------------------------------------------------------------------------------------------------


def _lens_filter(rng: np.random.Generator) -> np.ndarray:
    """A random symmetric 3x3 low-pass, sum 1: a slightly soft lens, or a generator's smoothing conv."""
    b, a = rng.uniform(0.0, 0.15), rng.uniform(0.0, 0.05)
    k = np.array([[a, b, a], [b, 1.0, b], [a, b, a]])
    return k / k.sum()


def _filter2d(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Correlate an (n, n, C) image with a small odd kernel, edge-replicated borders."""
    r = k.shape[0] // 2
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    n0, n1 = img.shape[:2]
    out = np.zeros_like(img)
    for i in range(k.shape[0]):
        for j in range(k.shape[1]):
            if k[i, j] != 0:
                out += np.float32(k[i, j]) * pad[i:i + n0, j:j + n1]
    return out


def _upsampling_kernel(rng: np.random.Generator) -> np.ndarray:
    """A 6x6 stride-2 transposed-convolution kernel that looks learned: interpolator * smoothing + noise.

    Its four polyphase components (taps of one row/column parity) set the gain of the four output pixel
    phases. An ideal up-sampler gives them all gain 1; here they differ by a random pattern of rms
    ``TRACE_STRENGTH``, which is what leaves a period-2 trace in every fake image.
    """
    interp = np.array([0, 1, 1, 0], float) if rng.random() < 0.5 else np.array([1, 3, 3, 1], float) / 4
    base = np.outer(interp, interp)  # 4x4, each polyphase component sums to 1
    smooth = _lens_filter(rng)
    kernel = np.zeros((6, 6))
    for i in range(3):
        for j in range(3):
            kernel[i:i + 4, j:j + 4] += smooth[i, j] * base
    # Learned kernels are never exactly the interpolator: small random taps, larger near the centre.
    env = np.exp(-0.5 * ((np.arange(6) - 2.5) / 1.5) ** 2)
    kernel += rng.normal(0, rng.uniform(0.01, 0.04), (6, 6)) * np.outer(env, env)
    z = rng.standard_normal(4)
    z -= z.mean()
    z /= np.sqrt((z * z).mean()) + 1e-12
    gains = 1.0 + rng.uniform(*TRACE_STRENGTH) * z  # mean exactly 1: overall brightness is preserved
    for k, (py, px) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        sub = kernel[py::2, px::2]
        sub += (gains[k] - sub.sum()) / sub.size
    return kernel


def _transposed_conv_up2(low: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Stride-2 transposed convolution of an (n, n, C) image with a 6x6 kernel -> (2n, 2n, C).

    Written as zero insertion followed by correlation; the offsets put output pixel 2m at low-resolution
    coordinate m - 1/4, which is where a pixel-centred 2x up-sampling puts it.
    """
    n = low.shape[0]
    pad = np.pad(low, ((2, 2), (2, 2), (0, 0)), mode="edge")
    z = np.zeros((2 * (n + 4), 2 * (n + 4), low.shape[2]), np.float32)
    z[0::2, 0::2] = pad
    out = np.zeros((2 * n, 2 * n, low.shape[2]), np.float32)
    for i in range(6):
        for j in range(6):
            out += np.float32(kernel[i, j]) * z[1 + i:1 + i + 2 * n, 1 + j:1 + j + 2 * n]
    return out


def make_demo_image(rng: np.random.Generator, size: int, fake: bool) -> Image.Image:
    """One RGB image of size x size.

    Args:
        rng: Source of all randomness (advanced by the call); the image is a pure function of its state.
        size: Side in pixels; even and at least 16 (the fake path renders at ``size // 2``).
        fake: False for a "camera" image, True for one whose coarse layer went through a generator-like
            2x up-sampling (see the module docstring).

    Returns:
        An 8-bit RGB ``PIL.Image`` of ``size`` x ``size`` pixels.

    Raises:
        ValueError: If ``size`` is odd or smaller than 16.
    """
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    params = _draw_scene_params(rng)
    # Both classes draw the same things in the same order, so only `fake` changes what is done with them.
    lens = _lens_filter(rng)
    kernel = _upsampling_kernel(rng)
    fine = _spectral_field(rng, size, 3, rng.uniform(0.3, 0.8), None)
    fine_gain = np.array([rng.uniform(0.015, 0.05)] + [rng.uniform(0.003, 0.01)] * 2, np.float32)
    noise_sigma = rng.uniform(0.002, 0.008)
    noise = rng.standard_normal((size, size, 3)).astype(np.float32)

    if fake:
        coarse = _transposed_conv_up2(_render_coarse(params, size // 2, size), kernel)
    else:
        coarse = _filter2d(_render_coarse(params, size, size), lens)
    # Fine texture is luminance-heavy (like surface detail) with faint chroma; added after the up-sampling
    # in the fake path, as a generator's later layers and noise inputs would add it.
    luma_dir = np.array([1.0, 1.0, 1.0], np.float32)
    fine_rgb = fine[..., :1] * fine_gain[0] * luma_dir + fine[..., 1:] @ (
        np.array([[1.0, -0.5, -0.5], [0.0, 0.8, -0.8]], np.float32) * fine_gain[1:, None])
    img = coarse + fine_rgb + noise * np.float32(noise_sigma)
    arr = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)  # uint8 (H, W, 3) is RGB; the `mode` argument is deprecated in Pillow


# --------------------------------------------------------------------------------------------------------
# Dataset on disk
# --------------------------------------------------------------------------------------------------------


def _readme(counts: dict[str, dict[str, int]], size: int, seed: int, quality: int) -> str:
    lines = [
        "SYNTHETIC DEMO DATA - not photographs, not real GAN output.",
        "",
        "Written by fakeface.synthetic.make_demo_dataset so that `fakeface demo` runs without a download.",
        f"seed={seed} size={size}x{size} jpeg_quality={quality}",
        "",
        "Every image is a random scene: 1/f colour texture, light gradient, soft shaded ellipses and, in",
        "most images, a face-like figure (head, hair, eyes, nose, mouth), plus fine 1/f texture and",
        "sensor noise.",
        "",
        "real/: every layer rendered at full resolution, then a slightly soft 3x3 'lens'.",
        "fake/: the coarse layer rendered at HALF resolution and up-sampled 2x by a stride-2 transposed",
        "       convolution with a random 'learned' kernel (nearest/bilinear interpolator, smoothing, noise,",
        "       polyphase gains unequal by 5-10% rms); fine texture and noise added after, at full resolution.",
        "",
        "The only cue is that up-sampling trace: a faint period-2 pattern (peaks at N/2 in the 2-D FFT), the",
        "artefact real GAN detectors pick up. Colour, brightness and contrast have the same distribution in",
        "both classes. A model that scores well here has learned to see up-sampling traces - nothing about",
        "real faces or any real generator.",
        "",
        "Counts (images per class):",
    ]
    lines += [f"  {split}: real={c['real']} fake={c['fake']}" for split, c in counts.items()]
    return "\n".join(lines) + "\n"


def make_demo_dataset(
    root: str | os.PathLike,
    n_train: int = 600,
    n_valid: int = 100,
    n_test: int = 100,
    size: int = 128,
    seed: int = 0,
    quality: int = 90,
) -> dict[str, dict[str, int]]:
    """Write root/{train,valid,test}/{real,fake}/NNNNN.jpg (n_* images PER CLASS per split), JPEG at quality.

    Deterministic for a given seed (same bytes on rerun). Returns counts {split: {"real": n, "fake": n}}.
    Writes a README.txt in root saying the data is synthetic and how it was made.

    Each image has its own generator seeded by (seed, split, class, index), so images do not depend on the
    other counts and no scene repeats across splits. Stale ``NNNNN.jpg`` files left in the class folders by
    an earlier, larger run are removed, so the folders hold exactly the returned counts; other files are
    left alone.

    Args:
        root: Folder to write into; created if missing.
        n_train: Training images per class.
        n_valid: Validation images per class.
        n_test: Test images per class.
        size: Image side in pixels (even, >= 16).
        seed: Dataset seed.
        quality: JPEG quality, 1-95.

    Returns:
        ``{split: {"real": n, "fake": n}}`` for the three splits.

    Raises:
        ValueError: On a negative count, a bad ``size`` or a ``quality`` outside 1-95.
    """
    counts_in = {"train": n_train, "valid": n_valid, "test": n_test}
    for name, n in counts_in.items():
        if int(n) != n or n < 0:
            raise ValueError(f"n_{name} must be a non-negative integer, got {n!r}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    if not 1 <= quality <= 95:
        raise ValueError(f"quality must be in 1..95, got {quality}")
    root = Path(root)
    counts: dict[str, dict[str, int]] = {}
    for split_idx, split in enumerate(SPLITS):
        n = int(counts_in[split])
        counts[split] = {}
        for label, cls in enumerate(CLASS_NAMES):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            wanted = {f"{i:05d}.jpg" for i in range(n)}
            for old in folder.iterdir():
                if _FILE_RE.match(old.name) and old.name not in wanted:
                    old.unlink()
            for i in range(n):
                rng = np.random.default_rng([seed, split_idx, label, i])
                img = make_demo_image(rng, size, fake=label == FAKE)
                # Explicit encoder settings: the bytes then depend only on the seed (and the libjpeg build).
                img.save(folder / f"{i:05d}.jpg", format="JPEG", quality=quality, subsampling="4:2:0",
                         optimize=False, progressive=False)
            counts[split][cls] = n
    (root / "README.txt").write_text(_readme(counts, size, seed, quality), encoding="utf-8")
    return counts

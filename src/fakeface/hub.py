"""The publishable model folder: ``model.safetensors`` + ``config.json`` + ``README.md``, and the detector
shipped inside the package in that format (:func:`default_detector_dir`).

A folder holds what inference needs and nothing else - no optimizer state, no pickle:

    model.safetensors   the weights (float16 or float32; integer buffers as they are)
    config.json         architecture (registry name + kwargs), preprocessing, threshold, calibration
                        (temperature, policy, test-time augmentation), release name and version, and the
                        training provenance when the checkpoint had it (config, seed, history, data record)
    README.md           the model card, with the YAML front matter model hubs read (license, tags, metrics)

An ensemble run is published as one folder per member (``member0/``, ``member1/``, each a folder as above)
under a top-level ``config.json`` (``"members": ["member0", ...]``) and ``calibration.json`` - the ensemble's
own threshold in the run folder's format - so the folder is laid out like the ensemble run it came from.

:func:`load_folder` returns the dict :func:`fakeface.checkpoint.load_checkpoint` returns, weights in float32,
so :func:`fakeface.checkpoint.model_from_checkpoint` and everything downstream work unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch
import yaml

from . import __version__
from .checkpoint import (
    ENSEMBLE_CALIBRATION,
    FOLDER_CONFIG,
    FOLDER_WEIGHTS,
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_file,
    ensemble_members,
    load_checkpoint,
    read_ensemble_calibration,
    save_atomic,
)
from .files import file_sha256

FOLDER_FORMAT = "fakeface-folder"
FOLDER_FORMAT_VERSION = 1
WEIGHTS, CONFIG, CARD = FOLDER_WEIGHTS, FOLDER_CONFIG, "README.md"
DTYPES = {"float16": torch.float16, "float32": torch.float32}
# what config.json carries of a checkpoint beyond the model itself; optimizer, scheduler and RNG state never
INFERENCE_KEYS = ("preprocess", "threshold", "threshold_policy", "temperature", "tta", "calibration")
TRAINING_KEYS = ("train_config", "epoch", "best_epoch", "monitor", "history", "classes", "data")
DEFAULT_DIR = Path(__file__).resolve().parent / "default"


class FolderError(CheckpointError):
    """A model folder that cannot be read or written."""


# -- writing ---------------------------------------------------------------------------------------------------
def save_folder(source, out_dir: str | os.PathLike, dtype: str = "float16", name: str | None = None,
                version: str | None = None, card: str | None = None, license: str = "other",
                extra: dict | None = None) -> Path:
    """Write ``source`` - a checkpoint dict, a ``.pt`` file, a run folder or an ensemble run folder - as a model
    folder at ``out_dir`` (replaced whole, atomically: a reader sees the old folder or the new one).

    ``dtype`` is the weights' float type ("float16" halves the size; loading casts back to float32). ``name``
    and ``version`` name the release (printed by the commands that load it); ``card`` is README.md's body
    (default: a card made from config.json); ``extra`` is merged into config.json (e.g. ``provenance``)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out_dir = Path(out_dir)
    members = [] if isinstance(source, dict) else ensemble_members(source)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        release = {"name": name or out_dir.name, "version": version or "0"}
        if members:
            names = [m.name for m in members]
            for member in members:
                _write_model(load_checkpoint(checkpoint_file(member)), tmp / member.name, dtype, release, None)
            config = {"format": FOLDER_FORMAT, "format_version": FOLDER_FORMAT_VERSION,
                      "fakeface_version": __version__, "release": release, "members": names, **(extra or {})}
            record = read_ensemble_calibration(source)
            if record is not None:  # the ensemble's own threshold travels in the run's format, so load_detector
                (tmp / ENSEMBLE_CALIBRATION).write_text(json.dumps(record, indent=2) + "\n")  # applies it as is
                config["ensemble_calibration"] = record
            _write_json(tmp / CONFIG, config)
        else:
            ckpt = source if isinstance(source, dict) else load_checkpoint(source)
            config = _write_model(ckpt, tmp, dtype, release, extra)
        metrics = (extra or {}).get("metrics")
        (tmp / CARD).write_text(model_card(config, card, license, metrics), encoding="utf-8")
        old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _write_model(ckpt: dict, folder: Path, dtype: str, release: dict, extra: dict | None) -> dict:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(DTYPES[dtype]) if v.is_floating_point() else v).contiguous()
               for k, v in ckpt["state_dict"].items()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": FOLDER_FORMAT, "dtype": dtype})
    os.chmod(folder / WEIGHTS, 0o644)  # safetensors writes owner-only; a package's data is readable by all
    config = {"format": FOLDER_FORMAT, "format_version": FOLDER_FORMAT_VERSION, "fakeface_version": __version__,
              "release": release, "model": ckpt["model"],
              **{k: ckpt[k] for k in INFERENCE_KEYS if k in ckpt},
              "weights": {"file": WEIGHTS, "dtype": dtype, "sha256": file_sha256(folder / WEIGHTS)},
              "training": {k: ckpt[k] for k in TRAINING_KEYS if ckpt.get(k) is not None},
              **(extra or {})}
    _write_json(folder / CONFIG, config)
    return config


def inference_part(ckpt: dict) -> dict:
    """A checkpoint without optimizer, scheduler, scaler and RNG state: what predicting, calibrating and
    describing it read."""
    keep = ("format", "format_version", "fakeface_version", "model", "state_dict", *INFERENCE_KEYS, *TRAINING_KEYS)
    return {k: v for k, v in ckpt.items() if k in keep}


def weights_copy(source: str | os.PathLike, out: str | os.PathLike, dtype: str = "float16") -> Path:
    """Checkpoint ``source`` as :func:`inference_part` keeps it, floating-point weights in ``dtype``: an ordinary
    checkpoint every command takes, a fraction of a training checkpoint's size."""
    small = inference_part(load_checkpoint(source))
    small["state_dict"] = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v
                           for k, v in small["state_dict"].items()}
    save_atomic(small, out)
    return Path(out)


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def model_card(config: dict, body: str | None = None, license: str = "other", metrics: dict | None = None) -> str:
    """README.md: YAML front matter as model hubs read it (license, tags, pipeline_tag, metrics), then ``body``
    or, without one, the facts of ``config``."""
    release = config.get("release", {})
    front = {"license": license, "library_name": "fakeface", "pipeline_tag": "image-classification",
             "tags": ["image-classification", "deepfake-detection", "gan-detection", "face", "safetensors"],
             "metrics": ["roc_auc", "accuracy"]}
    results = [{"task": {"type": "image-classification"},
                "dataset": {"name": f"{m.get('data', 'faces')} ({split})", "type": str(m.get("data", "faces")),
                            "split": split},
                "metrics": [{"type": k, "value": round(float(m[k]), 4)} for k in ("roc_auc", "accuracy")
                            if m.get(k) is not None]}
               for split, m in (metrics or {}).items()]
    if results:
        front["model-index"] = [{"name": release.get("name", "fakeface"), "results": results}]
    if body is None:
        model = config.get("model") or {"name": f"ensemble of {len(config.get('members', []))}"}
        body = (f"# {release.get('name')} {release.get('version')}\n\nA fakeface real-vs-generated face detector "
                f"({model['name']}). Load it with `fakeface predict --checkpoint THIS_FOLDER photo.jpg`.\n\n"
                "```json\n" + json.dumps({k: v for k, v in config.items() if k not in ("training",)}, indent=2,
                                         default=str) + "\n```\n")
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body


# -- reading ---------------------------------------------------------------------------------------------------
def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model folder (single model or ensemble): a directory with config.json."""
    return Path(path).is_dir() and (Path(path) / CONFIG).is_file()


def read_config(folder: str | os.PathLike) -> dict:
    """A folder's config.json, checked to be ours; :class:`FolderError` with the reason otherwise."""
    folder = Path(folder)
    path = folder / CONFIG
    if not folder.is_dir():
        raise FolderError(f"model folder not found: {folder}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FolderError(f"{folder} is not a model folder: it has no {CONFIG}") from None
    except (OSError, ValueError) as e:
        raise FolderError(f"cannot read {path} ({type(e).__name__}: {e}): the folder is damaged; write it "
                          "again from its run") from None
    if not isinstance(config, dict) or config.get("format") != FOLDER_FORMAT:
        raise FolderError(f"{path} is not a fakeface model folder's config (no \"format\": \"{FOLDER_FORMAT}\")")
    if config.get("format_version", 0) > FOLDER_FORMAT_VERSION:
        raise FolderError(f"{folder} was written by a newer fakeface (folder format "
                          f"{config['format_version']}); upgrade fakeface to load it")
    return config


def folder_members(folder: str | os.PathLike) -> list[Path]:
    """The member folders of an ensemble folder; [] for a single model."""
    return [Path(folder) / m for m in read_config(folder).get("members") or []]


def load_folder(folder: str | os.PathLike) -> dict:
    """The checkpoint dict of a single-model folder, as :func:`fakeface.checkpoint.load_checkpoint` returns it
    (float32 weights, ``path`` = the folder), plus ``release`` ({"name", "version"}) and whatever else
    config.json holds (``provenance``, ``metrics``). :class:`FolderError` with one reason when it cannot."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    folder = Path(folder)
    config = read_config(folder)
    if config.get("members"):
        raise FolderError(f"{folder} is an ensemble of {len(config['members'])} models; this takes one of them: "
                          + ", ".join(str(folder / m) for m in config["members"]))
    for key in ("model", "preprocess", "weights"):
        if not isinstance(config.get(key), dict):
            raise FolderError(f"{folder / CONFIG} has no {key!r} section: not a complete model folder")
    weights = folder / config["weights"].get("file", WEIGHTS)
    try:
        data = weights.read_bytes()
    except OSError as e:
        raise FolderError(f"cannot read the weights of {folder}: {weights.name} ({e.strerror or e})") from None
    if config["weights"].get("sha256") not in (None, hashlib.sha256(data).hexdigest()):
        raise FolderError(f"{weights} does not match the checksum in {CONFIG}: the file was changed or damaged")
    try:
        tensors = load(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise FolderError(f"cannot read {weights}: not a safetensors file, or a damaged one ({e})") from None
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, "fakeface_version": config.get("fakeface_version"),
            **{k: v for k, v in config.items() if k not in ("format", "format_version", "fakeface_version",
                                                             "weights", "training")},
            **config.get("training", {}), "state_dict": state_dict, "path": str(folder)}
    ckpt.setdefault("threshold", 0.5)
    ckpt.setdefault("threshold_policy", "default")
    ckpt.setdefault("temperature", 1.0)
    return ckpt


def release_line(folder: str | os.PathLike) -> str:
    """One line naming a folder's release, e.g. ``fakeface-default 0.1 (efficientnet_lite0, provisional)``."""
    config = read_config(folder)
    release = config.get("release", {})
    what = config["model"]["name"] if "model" in config else f"ensemble of {len(config.get('members', []))}"
    notes = ", provisional" if release.get("provisional") else ""
    return f"{release.get('name', Path(folder).name)} {release.get('version', '?')} ({what}{notes})"


# -- the detector shipped in the package ------------------------------------------------------------------------
def default_detector_dir() -> Path:
    """The folder of the detector shipped in the package (what ``None`` as a checkpoint means); one clear
    :class:`FolderError` when the installation lacks it."""
    if not (DEFAULT_DIR / CONFIG).is_file():
        raise FolderError(f"the default detector is not installed ({DEFAULT_DIR} has no {CONFIG}): make it with "
                          "`python benchmarks/make_default.py`, or name a detector with --checkpoint")
    return DEFAULT_DIR


def default_provisional() -> bool:
    """Whether the shipped default is a provisional stand-in (its card says so), not the project's recipe."""
    return bool(read_config(default_detector_dir()).get("release", {}).get("provisional"))


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as model hubs spell a repository


def from_hub(repo_id: str) -> Path:
    """The local folder of a model folder published on the Hugging Face Hub (``owner/name``): downloaded into
    huggingface_hub's cache, or - with ``HF_HUB_OFFLINE=1`` - taken from it. Needs ``huggingface_hub``
    (``pip install 'fakeface[hub]'``); :class:`FolderError` with the reason when it cannot."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FolderError(f"{repo_id} is not a local file or folder; to load it from the model hub install "
                          "huggingface_hub (pip install 'fakeface[hub]')") from None
    try:
        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.md"],
                                   library_name="fakeface", library_version=__version__)
    except Exception as e:  # network, authentication, not found, not cached offline: one line, not its traceback
        raise FolderError(f"{repo_id} is not a local file or folder, and the model hub did not give it "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return Path(folder)


def resolve(path: Path | None) -> list[Path] | None:
    """What :func:`fakeface.detector.load_detector` loads for ``path`` (a resolver of
    :data:`fakeface.detector.RESOLVERS`): None -> the default detector's folder; a hub id (``owner/name`` that is
    not a local path) -> its downloaded folder; a model folder -> itself; anything else is passed on (None)."""
    if path is None:
        return [default_detector_dir()]
    if not path.exists() and HUB_ID.match(path.as_posix()):
        return [from_hub(path.as_posix())]
    return [path] if is_model_folder(path) else None


# -- where the ONNX exports of a folder go -------------------------------------------------------------------------
def cache_dir() -> Path:
    """fakeface's user cache: ``$XDG_CACHE_HOME/fakeface`` (default ``~/.cache/fakeface``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fakeface"


def source_digest(checkpoint: str | os.PathLike) -> str:
    """The SHA-256 an ONNX export records of what it was made from, so that a changed source makes it stale: a
    checkpoint file's own, or for a folder's ``model.safetensors`` that of its weights and the ``config.json``
    beside them (threshold, temperature and preprocessing are there, and an export carries them too)."""
    checkpoint = Path(checkpoint)
    if checkpoint.name != WEIGHTS:
        return file_sha256(checkpoint)
    config = checkpoint.with_name(CONFIG)
    digest = hashlib.sha256(file_sha256(checkpoint).encode())
    digest.update(config.read_bytes() if config.is_file() else b"")
    return digest.hexdigest()


def exports_dir(weights: str | os.PathLike) -> Path:
    """Where the ONNX exports of a folder's ``model.safetensors`` are kept: in the user cache, keyed by
    :func:`source_digest`, since the folder itself may be read-only (the default detector inside an installed
    package) and the same model in two places needs one export."""
    return cache_dir() / "exports" / source_digest(weights)[:16]

"""Distillation end to end on a tiny set, the student as an ordinary run, and the export written after training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from conftest import make_folder_dataset, noise_image
from fakeface.checkpoint import load_checkpoint
from fakeface.detector import exports_beside, load_detector
from fakeface.distill import DistillConfig, distill, unlabelled_samples
from fakeface.export import export_onnx
from fakeface.predict import predict_paths
from fakeface.train import TrainConfig, train

pytestmark = pytest.mark.slow

STUDENT = dict(model="efficientnet_lite0", image_size=64, batch_size=8, precision="fp32", workers=0, lr=3e-3,
               warmup_epochs=0.2)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    data = make_folder_dataset(root / "ds", per_class=8, size=80)
    run = train(TrainConfig(data=str(data), out=str(root / "teacher"), epochs=2, calibrate="balanced", **STUDENT))
    return data, run


def test_student_moves_toward_the_teacher_and_is_an_ordinary_run(teacher, tmp_path):
    data, run = teacher
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(4):
        noise_image(50 + i, 80).save(extra / f"{i}.jpg")
    (tmp_path / "list.txt").write_text("# unlabelled\nextra/0.jpg\nextra/1.jpg\n")
    config = tmp_path / "d.yaml"
    config.write_text("distill: {alpha: 1.0, temperature: 2.0, extra_data: [%s]}\n" % (tmp_path / "list.txt"))
    student = distill(run, data, tmp_path / "student", config, epochs=4, export="none", gpu_augment=True,
                      calibrate="balanced", **{k: v for k, v in STUDENT.items() if k != "lr"}, lr=1e-2)
    ckpt = load_checkpoint(student / "last.pt")
    soft = [r["distill_loss"] for r in ckpt["history"]]
    assert len(soft) == 4 and soft[-1] < soft[0], soft  # the student's probabilities approach the teacher's
    assert ckpt["train_config"]["distill"]["teacher"] == str(run)

    # an ordinary run: load_detector, predict and export take it
    paths = sorted(str(p) for p in (data / "test").rglob("*.jpg"))
    rows = list(predict_paths(load_detector(student, precision="fp32"), paths, workers=0))
    assert len(rows) == len(paths) and all(0 <= r["p_fake"] <= 1 for r in rows)
    report = export_onnx(student / "best.pt", tmp_path / "student.onnx")
    assert report["fp32"]["max_abs_diff_p"] <= report["fp32"]["tolerance"]


def test_a_distillation_stopped_by_its_whole_process_group_says_how_to_resume_and_resumes(teacher, tmp_path):
    """A scheduler or systemd terminates every process of the job, the loader workers too: the run stops as on
    Ctrl-C (no crash report about a killed worker), and train --resume goes on distilling."""
    data, run = teacher
    config, student = tmp_path / "s.yaml", tmp_path / "student"
    config.write_text(yaml.safe_dump({**STUDENT, "workers": 1, "epochs": 30, "export": "none"}))
    proc = subprocess.Popen([sys.executable, "-m", "fakeface", "distill", "--teacher", str(run), "--data", str(data),
                             "--out", str(student), "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not (student / "last.pt").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # the main process and its loader workers
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"interrupted: resume with  fakeface train --out {student} --resume" in err and "Traceback" not in err
    stopped = load_checkpoint(student / "last.pt")["epoch"]
    assert 1 <= stopped < 30
    config.write_text(yaml.safe_dump({"epochs": stopped + 1}))  # finish one more epoch rather than 30
    done = subprocess.run([sys.executable, "-m", "fakeface", "train", "--out", str(student), "--resume",
                           "--config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0 and "distilling" in done.stderr, done.stderr
    assert load_checkpoint(student / "last.pt")["history"][-1]["distill_loss"] > 0


def test_with_mixing_the_teacher_scores_the_mixed_images_the_student_sees(teacher, tmp_path, monkeypatch):
    """Function matching: MixUp / CutMix pixels go to the teacher as to the student, and a mix with an
    unlabelled image counts in the teacher's term alone."""
    from fakeface import train as train_module
    from fakeface.augment import mix_batch
    from fakeface.distill import Teacher

    data, run = teacher
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(8):
        noise_image(80 + i, 80).save(extra / f"{i}.jpg")
    mixed, scored, labels = [], [], []

    def spy_mix(x, y, aug, rng):
        out = mix_batch(x, y, aug, rng)
        mixed.append(out[0].clone())
        labels.append(out[1].clone())
        return out

    probs = Teacher.probs

    def spy_probs(self, pixels):
        scored.append(pixels.clone())
        return probs(self, pixels)

    monkeypatch.setattr(train_module, "mix_batch", spy_mix)
    monkeypatch.setattr(Teacher, "probs", spy_probs)
    distill(run, data, tmp_path / "student", epochs=1, export="none", distill={"extra_data": str(extra)},
            augment={"mixup_alpha": 1.0, "cutmix_alpha": 1.0, "mix_p": 1.0}, **STUDENT)
    assert len(scored) == len(mixed) >= 3  # 16 labelled and 8 unlabelled training images, batch 8
    for m, s in zip(mixed, scored):
        assert torch.equal(m, s)
    y = torch.cat(labels)
    assert ((y > 0) & (y < 1)).any()  # labelled pairs mixed into soft labels
    assert (y == -1).any() and ((y == -1) | ((y >= 0) & (y <= 1))).all()  # a mix with no label has none


def test_training_writes_the_export_beside_best(teacher, tmp_path):
    data, _ = teacher
    run = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, **STUDENT))
    found, _ = exports_beside(run / "best.pt")
    assert found and {m["precision"] for _, m in found} <= {"fp32", "int8"}
    assert "fp32" in {m["precision"] for _, m in found}
    none = train(TrainConfig(data=str(data), out=str(tmp_path / "none"), epochs=1, export="none", **STUDENT))
    assert not list(none.glob("*.onnx"))


def test_a_failed_export_is_a_warning(teacher, tmp_path, monkeypatch, caplog):
    import fakeface.export

    def broken(*args, **kwargs):
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(fakeface.export, "export_onnx", broken)
    data, _ = teacher
    run = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, **STUDENT))
    assert (run / "best.pt").is_file() and not list(run.glob("*.onnx"))
    assert "no ONNX export written" in caplog.text and "no exporter here" in caplog.text


def test_teacher_probabilities_on_the_device(teacher):
    from fakeface.distill import Teacher

    _, run = teacher
    t = Teacher([str(run)], torch.device("cpu"))
    images = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8)  # any size: resized to the teacher's
    p = t.probs(images)
    detector = load_detector(run, precision="fp32")
    big = torch.nn.functional.interpolate(images.float(), size=(64, 64), mode="bilinear", antialias=True)
    expected = detector.p_fake(detector.scorer.logits(big.round().to(torch.uint8)).numpy())
    np.testing.assert_allclose(p.numpy(), expected, atol=0.02)


def test_bad_distill_settings_fail_when_read(tmp_path):
    with pytest.raises(ValueError, match="teacher"):
        DistillConfig.from_dict({})
    with pytest.raises(ValueError, match="alpha"):
        DistillConfig.from_dict({"teacher": "x", "alpha": 2})
    with pytest.raises(ValueError, match="unknown distill keys"):
        TrainConfig(distill={"teacher": "x", "alfa": 0.5})
    with pytest.raises(ValueError, match="not a folder"):
        unlabelled_samples([str(tmp_path / "missing")])

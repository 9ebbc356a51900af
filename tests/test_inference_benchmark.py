"""benchmarks/inference.py: measurements interleaved round by round; tables whose ratios follow from their columns."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import REPO

BENCH = REPO / "benchmarks" / "inference.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("inference_benchmark", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_best_rounds_interleaves_and_keeps_each_best():
    calls = []
    rates = {"a": iter([(5.0, "a1"), (9.0, "a2"), (7.0, "a3")]), "b": iter([(3.0, "b1"), (1.0, "b2"), (2.0, "b3")])}

    def measure(key):
        calls.append(key)
        return next(rates[key])

    best = load_benchmark().best_rounds({"a": lambda: measure("a"), "b": lambda: measure("b")}, rounds=3)
    assert calls == ["a", "b"] * 3  # one of each per round, not three of one then three of the other
    assert best == {"a": (9.0, "a2"), "b": (3.0, "b1")}  # the whole best round is kept, not a mix of rounds


def number(text: str) -> float:
    return float(text.rstrip("%"))


@pytest.mark.slow
def test_tables_hold_consistent_ratios(sample_root, tmp_path):
    res = subprocess.run([sys.executable, str(BENCH), "--models", "efficientnet_lite0", "--sizes", "48",
                          "--reps", "1", "--rounds", "2", "--e2e-rounds", "3", "--images", "40",
                          "--data", str(sample_root)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert "faces: the sample" in out and "best of 2 interleaved rounds" in out
    rows = {line[26:60].strip(): line[60:].split() for line in out.split("end to end:")[0].splitlines()
            if line.startswith("efficientnet_lite0") and len(line[60:].split()) == 8}
    assert {"pytorch fp32", "pytorch fp32 channels_last", "onnxruntime fp32", "onnxruntime int8 (QDQ)"} <= set(rows)
    for ips, cpu_ms, gflop, gflops, peak, of_peak, torch_peak, ort_peak in rows.values():
        assert number(ips) > 0 and number(cpu_ms) > 0 and number(torch_peak) > 0 and number(ort_peak) > 0
        assert number(peak) == max(number(torch_peak), number(ort_peak))  # the faster library's matmul
        # GFLOP/img is printed to 0.01: the product is exact to ips x 0.005
        assert number(gflops) == pytest.approx(number(ips) * number(gflop), abs=number(ips) * 0.005 + 0.1)
        assert number(of_peak) / 100 == pytest.approx(number(gflops) / number(peak), abs=0.002)
    assert "best of 3 interleaved rounds" in out.split("end to end:")[1]
    e2e = [line.split() for line in out.split("end to end:")[1].splitlines() if line.startswith("efficientnet_lite0")]
    assert [row[-9] for row in e2e] == ["1", "0"]  # a decoding thread, then decoding between batches
    for row in e2e:
        model_ips, e2e_ips, ratio, ceiling, model_cpu, _, decode, pre = map(number, row[-8:])
        assert ratio == pytest.approx(e2e_ips / model_ips, abs=0.006)
        assert ceiling == pytest.approx(model_cpu / (model_cpu + decode + pre), abs=0.006)
        assert 0 < ceiling < 1 and decode > 0 and pre > 0

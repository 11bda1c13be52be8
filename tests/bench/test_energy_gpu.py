"""The GPU energy benchmark's logic, on the CPU, over a stand-in NVML whose counter and power
describe the same physical draw (so both methods must agree), and its refusal without a GPU."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import energy_gpu
from trainables import energy
from trainables.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


class NVMLError(Exception):
    pass


class PhysicalNvml:
    """One GPU drawing ``watts`` W from the moment it is made: the energy counter (mJ) is the
    exact integral of that draw over ``time.perf_counter``, and power reads ``watts`` in mW,
    as a real board with steady draw would report both."""

    NVMLError = NVMLError

    def __init__(self, watts: float = 250.0, counter: bool = True):
        self.watts, self.counter, self.t0, self.inits = watts, counter, time.perf_counter(), 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        assert self.inits > 0
        self.inits -= 1

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        if i != 0:
            raise NVMLError("Invalid Argument")
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counter:
            raise NVMLError("Not Supported")
        return int(1000 * self.watts * (time.perf_counter() - self.t0))

    def nvmlDeviceGetPowerUsage(self, handle):
        return int(1000 * self.watts)


def test_both_methods_measure_the_same_windows_and_the_trial_says_unavailable_on_cpu(monkeypatch, glue_dir,
                                                                                      sst2_teacher, tmp_path, capsys):
    nvml = PhysicalNvml(watts=250.0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    result = energy_gpu.main(["--device", "cpu", "--train-rows", "400", "--epochs", "2", "--threads", "1",
                              "--interval", "0.01", "--no-mlflow", "--data-dir", str(glue_dir),
                              "--teacher", str(sst2_teacher), "--cache-dir", str(tmp_path / "cache")], nvml=nvml)
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("SUMMARY: energy_gpu on cpu")
    assert result["counter_method"] == "nvml_counter"
    # steady 250 W: both methods give 250 W x the window's seconds, the counter to the millijoule
    assert result["counter_j"] == pytest.approx(250.0 * result["seconds"], rel=0.01)
    assert result["sampling_j"] == pytest.approx(result["counter_j"], rel=0.02)
    assert result["within_tolerance"] and abs(result["diff_pct"]) < 2
    assert nvml.inits == 0  # every window shut NVML down again
    # the pipeline meters no GPU for a CPU trial (here: unavailable, not 0; RAPL where readable)
    assert not result["trial_energy_method"].startswith("nvml")
    assert (result["trial_energy_j"] is None) == (result["trial_energy_method"] == "unavailable")


def test_diff_pct_and_a_gpu_without_the_counter():
    assert energy_gpu.diff_pct(100.0, 109.0) == pytest.approx(9.0)
    for c, s in ((None, 1.0), (1.0, None), (0.0, 1.0)):
        assert energy_gpu.diff_pct(c, s) != energy_gpu.diff_pct(c, s)  # NaN, never a made-up 0
    assert energy.NvmlMeter(nvml=PhysicalNvml(counter=False)).method == "nvml_power"


def test_refuses_without_a_gpu_in_one_line():
    if energy.NvmlMeter(force_sampling=True).available:
        pytest.skip("this machine has NVML")
    with pytest.raises(ConfigError, match="NVML cannot read GPU power"):
        energy_gpu.check_gpu("cpu")
    with pytest.raises(ConfigError, match="--device must be cuda or cpu"):
        energy_gpu.check_gpu("tpu")
    proc = subprocess.run([sys.executable, "-m", "bench.energy_gpu", "--quick", "--no-mlflow"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr

"""Tests of trainables/energy/meters.py over a fake powercap tree and a fake NVML module."""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import pytest

from trainables.energy import (
    CpuEstimateMeter,
    EnergyReading,
    NvmlMeter,
    RaplMeter,
    UnavailableMeter,
    co2e_kg,
    energy_metrics,
    make_meter,
    process_cpu_seconds,
    strubell_kwh,
    sum_readings,
)

# --- A fake NVML module ---------------------------------------------------------------

class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """Stands in for ``pynvml``: energy counters the test advances, power as a function of time.

    ``clock`` is handed to the meter, so every power sample is evaluated exactly at the
    timestamp the meter gives it.
    """

    NVMLError = FakeNVMLError

    def __init__(self, n_gpus=2, counter=True, power_w=lambda t, gpu: 100.0, init_error=False,
                 fail_power_after=None):
        self.n_gpus = n_gpus
        self.counter = counter
        self.power_w = power_w
        self.init_error = init_error
        self.fail_power_after = fail_power_after
        self.energy_mj = [10**12 + 7] * n_gpus
        self.initialised = 0
        self.now = 0.0
        self.sample_times: list[float] = []
        self._t_ref = time.perf_counter()

    def clock(self) -> float:
        self.now = time.perf_counter() - self._t_ref
        return self.now

    def nvmlInit(self):
        if self.init_error:
            raise FakeNVMLError("Driver Not Loaded")
        self.initialised += 1

    def nvmlShutdown(self):
        assert self.initialised > 0, "nvmlShutdown without nvmlInit"
        self.initialised -= 1

    def nvmlDeviceGetCount(self):
        self._check()
        return self.n_gpus

    def nvmlDeviceGetHandleByIndex(self, i):
        self._check()
        if not 0 <= i < self.n_gpus:
            raise FakeNVMLError("Invalid Argument")
        return ("handle", i)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self._check()
        if not self.counter:
            raise FakeNVMLError("Not Supported")
        return self.energy_mj[handle[1]]

    def nvmlDeviceGetPowerUsage(self, handle):
        self._check()
        if handle[1] == 0:
            self.sample_times.append(self.now)
        if self.fail_power_after is not None and len(self.sample_times) > self.fail_power_after:
            raise FakeNVMLError("GPU is lost")
        return round(1000 * self.power_w(self.now, handle[1]))  # milliwatts, as NVML

    def _check(self):
        if self.initialised == 0:
            raise FakeNVMLError("Uninitialized")


def poller_threads():
    return [t for t in threading.enumerate() if t.name == "energy-poller" and t.is_alive()]


def test_nvml_counter_sums_selected_gpus_per_window():
    nvml = FakeNvml(n_gpus=2)
    meter = NvmlMeter(nvml=nvml)
    assert meter.available and meter.method == "nvml_counter"
    meter.start()
    nvml.energy_mj[0] += 12_345
    nvml.energy_mj[1] += 1_000
    first = meter.stop()
    assert first.joules == pytest.approx(13.345, abs=1e-12)
    assert first.method == "nvml_counter" and first.devices == ("gpu0", "gpu1")
    with meter as m:  # a second window is independent of the first
        nvml.energy_mj[1] += 500
    assert m.reading.joules == pytest.approx(0.5, abs=1e-12)
    assert nvml.initialised == 0


def test_nvml_explicit_indices_and_cuda_visible_devices(monkeypatch):
    nvml = FakeNvml(n_gpus=3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert NvmlMeter(nvml=nvml).devices == ("gpu2", "gpu0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,7,2")  # CUDA stops at the invalid 7
    assert NvmlMeter(nvml=nvml).devices == ("gpu1",)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8e1c3a3e")  # UUIDs: all GPUs
    assert NvmlMeter(nvml=nvml).devices == ("gpu0", "gpu1", "gpu2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not NvmlMeter(nvml=nvml).available
    meter = NvmlMeter(gpu_indices=[1], nvml=nvml)  # explicit indices win over the variable
    meter.start()
    nvml.energy_mj[0] += 9_000
    nvml.energy_mj[1] += 2_500
    reading = meter.stop()
    assert (reading.joules, reading.devices) == (pytest.approx(2.5), ("gpu1",))
    assert not NvmlMeter(gpu_indices=[5], nvml=nvml).available
    assert nvml.initialised == 0


def test_nvml_sampling_integrates_linear_power_exactly():
    # P_gpu(t) = 100 + 400 t W on gpu0 and 50 W on gpu1; the trapezoid rule is exact for it.
    nvml = FakeNvml(n_gpus=2, power_w=lambda t, gpu: 100.0 + 400.0 * t if gpu == 0 else 50.0)
    meter = NvmlMeter(nvml=nvml, sample_interval_s=0.01, force_sampling=True, clock=nvml.clock)
    assert meter.method == "nvml_power"
    meter.start()
    time.sleep(0.3)
    reading = meter.stop()
    a, b = nvml.sample_times[0], nvml.sample_times[-1]
    expected = 150.0 * (b - a) + 200.0 * (b**2 - a**2)
    assert reading.method == "nvml_power" and reading.devices == ("gpu0", "gpu1")
    assert reading.joules == pytest.approx(expected, abs=1e-3)  # mW rounding only
    assert len(nvml.sample_times) >= 5  # the thread sampled between the window ends
    assert b - a == pytest.approx(reading.seconds, abs=0.05)
    assert not poller_threads() and nvml.initialised == 0


def test_nvml_counter_error_falls_back_to_sampling():
    nvml = FakeNvml(n_gpus=1, counter=False, power_w=lambda t, gpu: 80.0)
    meter = NvmlMeter(nvml=nvml, sample_interval_s=0.01, clock=nvml.clock)
    assert meter.method == "nvml_power"
    with meter as m:
        time.sleep(0.1)
    span = nvml.sample_times[-1] - nvml.sample_times[0]
    assert m.reading.joules == pytest.approx(80.0 * span, rel=1e-9)
    assert m.reading.joules > 0
    assert not poller_threads() and nvml.initialised == 0


def test_nvml_error_while_sampling_gives_unavailable_and_stops_thread():
    nvml = FakeNvml(n_gpus=1, counter=False, fail_power_after=3)
    meter = NvmlMeter(nvml=nvml, sample_interval_s=0.005, clock=nvml.clock)
    meter.start()
    time.sleep(0.1)
    reading = meter.stop()
    assert reading.joules is None and reading.method == "unavailable"
    assert not poller_threads() and nvml.initialised == 0


def test_nvml_not_initialising_is_unavailable():
    meter = NvmlMeter(nvml=FakeNvml(init_error=True))
    assert not meter.available and meter.method == "unavailable"
    with meter as m:
        pass
    assert m.reading.joules is None and m.reading.devices == ()


# --- A fake powercap tree -----------------------------------------------------------------

def write_domain(root: Path, rel: str, name: str, energy_uj: int, max_uj: int) -> None:
    path = root / rel
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    set_uj(root, rel, energy_uj)


def set_uj(root: Path, rel: str, energy_uj: int) -> None:
    tmp = root / rel / "energy_uj.tmp"
    tmp.write_text(f"{energy_uj}\n")
    os.replace(tmp, root / rel / "energy_uj")  # atomic, as a poller may be reading


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    write_domain(root, "intel-rapl:0", "package-0", 9_000_000, 10_000_000)
    write_domain(root, "intel-rapl:0/intel-rapl:0:0", "core", 100, 10_000_000)
    write_domain(root, "intel-rapl:0/intel-rapl:0:1", "dram", 2_000, 5_000_000)
    write_domain(root, "intel-rapl:1", "psys", 0, 10_000_000)  # overlaps the package
    write_domain(root, "intel-rapl-mmio:0", "package-0", 0, 10_000_000)  # a second view
    return root


def test_rapl_package_and_dram_with_a_wrap(powercap: Path):
    meter = RaplMeter(powercap, poll_interval_s=None)
    assert meter.available and meter.devices == ("package-0", "dram-0")
    meter.start()
    set_uj(powercap, "intel-rapl:0", 500_000)  # wrapped: 10e6 - 9e6 + 0.5e6 = 1.5e6 µJ
    set_uj(powercap, "intel-rapl:0/intel-rapl:0:1", 3_002_000)  # +3e6 µJ
    set_uj(powercap, "intel-rapl:0/intel-rapl:0:0", 900_000)  # core: inside the package
    set_uj(powercap, "intel-rapl:1", 7_000_000)  # psys: not counted
    reading = meter.stop()
    assert reading.joules == 4.5
    assert reading.method == "rapl" and reading.devices == ("package-0", "dram-0")
    with meter as m:  # a new window starts from the current counters
        set_uj(powercap, "intel-rapl:0", 750_000)
    assert m.reading.joules == 0.25


def test_rapl_manual_polls_catch_two_wraps(powercap: Path):
    meter = RaplMeter(powercap, poll_interval_s=None)
    meter.start()
    set_uj(powercap, "intel-rapl:0", 4_000_000)  # 1e6 + 4e6
    meter.poll()
    set_uj(powercap, "intel-rapl:0", 2_000_000)  # 6e6 + 2e6
    assert meter.stop().joules == 13.0


def test_rapl_thread_polls_catch_two_wraps(powercap: Path):
    meter = RaplMeter(powercap, poll_interval_s=0.01)
    polled = threading.Event()

    def spy():
        RaplMeter.poll(meter)
        polled.set()

    meter.poll = spy  # the thread calls the instance's poll

    def wait_for_a_full_poll():
        for _ in range(2):  # the second poll began after the counter was written
            polled.clear()
            assert polled.wait(10), "the RAPL poller thread did not poll"

    meter.start()
    set_uj(powercap, "intel-rapl:0", 4_000_000)
    wait_for_a_full_poll()
    set_uj(powercap, "intel-rapl:0", 2_000_000)
    wait_for_a_full_poll()
    assert meter.stop().joules == 13.0
    assert not poller_threads()


def test_rapl_unreadable_is_unavailable(tmp_path: Path, powercap: Path):
    assert not RaplMeter(tmp_path / "missing").available
    assert not RaplMeter(tmp_path).available  # no intel-rapl domains
    (powercap / "intel-rapl:0" / "energy_uj").unlink()
    (powercap / "intel-rapl:0" / "energy_uj").mkdir()  # unreadable, even for root
    meter = RaplMeter(powercap)
    assert not meter.available and meter.method == "unavailable"
    with meter as m:
        pass
    assert m.reading.joules is None


def test_rapl_counter_lost_mid_window_gives_unavailable(powercap: Path):
    meter = RaplMeter(powercap, poll_interval_s=None)
    meter.start()
    (powercap / "intel-rapl:0" / "intel-rapl:0:1" / "energy_uj").unlink()
    reading = meter.stop()
    assert reading.joules is None and reading.method == "unavailable"


# --- Estimate, unavailable, make_meter ---------------------------------------------------------

def burn_cpu(seconds: float) -> None:
    start = process_cpu_seconds()
    x = 0
    while process_cpu_seconds() - start < seconds:
        x += sum(i * i for i in range(10_000))


def test_cpu_estimate_is_cpu_seconds_times_watts():
    meter = CpuEstimateMeter(watts_per_core=10.0)
    before = process_cpu_seconds()
    with meter as m:
        burn_cpu(0.2)
    after = process_cpu_seconds()
    assert m.reading.method == "estimate" and m.reading.devices == ("cpu",)
    assert 10.0 * 0.2 <= m.reading.joules <= 10.0 * (after - before)
    with pytest.raises(ValueError):
        CpuEstimateMeter(0.0)


def test_make_meter_prefers_nvml_then_rapl_then_estimate(powercap: Path, tmp_path: Path):
    assert make_meter(nvml=FakeNvml(), powercap_root=powercap).method == "nvml_counter"
    no_gpu = FakeNvml(init_error=True)
    assert make_meter(nvml=no_gpu, powercap_root=powercap).method == "rapl"
    missing = tmp_path / "missing"
    assert make_meter(nvml=no_gpu, powercap_root=missing).method == "unavailable"
    estimate = make_meter(nvml=no_gpu, powercap_root=missing, cpu_watts_per_core=15.0)
    with estimate as m:
        burn_cpu(0.05)
    assert m.reading.method == "estimate" and m.reading.joules > 0


def test_make_meter_on_this_machine(tmp_path: Path):
    meter = make_meter(powercap_root=tmp_path / "missing")
    with meter as m:
        time.sleep(0.01)
    has_gpu = Path("/dev/nvidia0").exists()
    if has_gpu:
        assert m.reading.method in ("nvml_counter", "nvml_power") and m.reading.joules >= 0
    else:
        assert isinstance(meter, UnavailableMeter)
        assert m.reading.joules is None and m.reading.method == "unavailable"
    assert m.reading.seconds >= 0.01


def test_meter_start_stop_misuse_raises():
    meter = UnavailableMeter()
    with pytest.raises(RuntimeError):
        meter.stop()
    meter.start()
    with pytest.raises(RuntimeError):
        meter.start()
    assert meter.stop().joules is None


@pytest.mark.parametrize("joules, method", [(None, "rapl"), (0.0, "unavailable"),
                                            (1.0, "magic"), (-1.0, "rapl")])
def test_reading_rejects_inconsistent_values(joules, method):
    with pytest.raises(ValueError):
        EnergyReading(joules, method, (), 1.0)


# --- Carbon and metrics -------------------------------------------------------------------

def test_co2e_one_kwh_is_pue_times_intensity():
    assert co2e_kg(3.6e6) == 1.59 * 0.430
    assert co2e_kg(7.2e6, pue=1.0, kg_per_kwh=0.5) == 1.0
    assert co2e_kg(0.0) == 0.0


def test_strubell_form():
    assert strubell_kwh(3600, 1000) == pytest.approx(1.58, rel=1e-12)
    assert strubell_kwh(7200, 250, pue=1.0) == pytest.approx(0.5, rel=1e-12)
    # 1 h at 350 W (e.g. a 250 W GPU + 100 W CPU and DRAM): 1.58 * 1 h * 0.35 kW
    assert strubell_kwh(3600, 350) == pytest.approx(0.553, rel=1e-12)


@pytest.mark.parametrize("call", [lambda: co2e_kg(-1.0), lambda: co2e_kg(1.0, pue=-1.59),
                                  lambda: co2e_kg(1.0, kg_per_kwh=-0.1),
                                  lambda: strubell_kwh(-1.0, 100), lambda: strubell_kwh(1.0, -100),
                                  lambda: strubell_kwh(1.0, 100, pue=-1.0),
                                  lambda: co2e_kg(math.nan)])
def test_carbon_rejects_negative_input(call):
    with pytest.raises(ValueError):
        call()


def test_energy_metrics_measured():
    train = EnergyReading(7.2e6, "nvml_counter", ("gpu0", "gpu1"), 3600.0)
    inference = EnergyReading(360.0, "rapl", ("package-0",), 2.0)
    metrics, tags = energy_metrics(train, inference, 2000, pue=1.59, kg_per_kwh=0.430)
    assert metrics == {
        "energy_j": 7.2e6,
        "co2e_kg": pytest.approx(2 * 1.59 * 0.430, rel=1e-12),
        "energy_kwh_strubell": pytest.approx(1.58 * 2000 / 1000, rel=1e-12),
        "energy_inference_j_per_1k": pytest.approx(180.0, rel=1e-12),
    }
    assert tags == {"energy_method": "nvml_counter", "energy_devices": "gpu0,gpu1",
                    "energy_inference_method": "rapl"}


def test_energy_metrics_absent_when_unavailable():
    train = EnergyReading(None, "unavailable", (), 10.0)
    metrics, tags = energy_metrics(train, train, 100, pue=1.59, kg_per_kwh=0.430)
    assert metrics == {}
    assert tags == {"energy_method": "unavailable", "energy_inference_method": "unavailable"}
    metrics, tags = energy_metrics(train, None, 0, pue=1.59, kg_per_kwh=0.430)
    assert metrics == {} and tags == {"energy_method": "unavailable"}
    with pytest.raises(ValueError):
        energy_metrics(train, train, 0, pue=1.59, kg_per_kwh=0.430)


def test_sum_readings_of_consecutive_windows():
    a = EnergyReading(1.5, "rapl", ("package-0", "dram-0"), 2.0)
    b = EnergyReading(2.25, "rapl", ("package-0", "dram-0"), 3.0)
    total = sum_readings([a, b])
    assert total == EnergyReading(3.75, "rapl", ("package-0", "dram-0"), 5.0)
    lost = EnergyReading(None, "unavailable", (), 1.0)
    assert sum_readings([a, lost]) == EnergyReading(None, "unavailable", (), 3.0)
    assert sum_readings([]).joules is None
    with pytest.raises(ValueError):
        sum_readings([a, EnergyReading(1.0, "estimate", ("cpu",), 1.0)])

"""Energy meters: how many joules a window of work used.

One base class, :class:`EnergyMeter`, gives every meter the same interface (the pattern of
accelerate's ``tracking.py``): ``start()``, ``stop() -> EnergyReading``, or a ``with`` block.
The concrete meters are thin and each reads one source:

- :class:`NvmlMeter`: GPU energy counter in mJ (``nvml_counter``), or GPU power in mW
  sampled on a thread and integrated (``nvml_power``).
- :class:`RaplMeter`: Intel RAPL package + DRAM counters in µJ via Linux powercap (``rapl``).
- :class:`CpuEstimateMeter`: process CPU seconds × a configured watts per core (``estimate``).
- :class:`UnavailableMeter`: nothing; ``joules`` is ``None`` (``unavailable``).

:func:`make_meter` picks the best one the machine offers and never raises because hardware is
missing. :func:`sum_readings` adds consecutive windows (epochs); :mod:`trainables.energy.carbon`
turns readings into the MLflow metrics and tags named in ``DESIGN.md``.

A reading that could not be measured has ``joules=None`` and method ``unavailable``; it is
never reported as 0 J.

Example:
    >>> meter = make_meter()
    >>> with meter as m:
    ...     pass  # the work to measure
    >>> m.reading.method in METHODS
    True
"""

from __future__ import annotations

import logging
import math
import os
import re
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METHODS = ("nvml_counter", "nvml_power", "rapl", "estimate", "unavailable")

@dataclass(frozen=True)
class EnergyReading:
    """The energy of one measured window.

    Attributes:
        joules: energy used in the window, in joules; ``None`` when it could not be measured
            (never 0 as a stand-in).
        method: how it was measured, one of :data:`METHODS`; ``"unavailable"`` exactly when
            ``joules`` is ``None``.
        devices: what was measured, e.g. ``("gpu0",)`` or ``("package-0", "dram-0")``; empty
            when unavailable.
        seconds: wall-clock length of the window, in seconds.

    Raises:
        ValueError: on an unknown method, a method that disagrees with ``joules``, or a
            negative or non-finite ``joules`` or ``seconds``.
    """

    joules: float | None
    method: str
    devices: tuple[str, ...]
    seconds: float

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"energy method {self.method!r} is not one of {METHODS}")
        if (self.joules is None) != (self.method == "unavailable"):
            raise ValueError("joules must be None exactly when the method is 'unavailable'")
        if self.joules is not None:
            check_non_negative("joules", self.joules)
        check_non_negative("seconds", self.seconds)


class EnergyMeter:
    """Base class: measures the energy used between ``start()`` and ``stop()``.

    A meter can be started and stopped any number of times; each window is independent. It
    can also be used as a context manager, after which ``reading`` holds the result::

        with meter as m:
            train()
        m.reading.joules

    Subclasses set their method in ``__init__`` and implement two hooks:

    - ``_begin()``: open what the window needs and read the starting values; on failure it
      releases what it opened and raises.
    - ``_end() -> (joules, devices)``: read the final values and release everything, also
      when it raises.

    A hook that raises one of the subclass's ``_hardware_errors`` (the device went away, a
    counter became unreadable) turns that window into an ``unavailable`` reading and logs a
    warning; any other exception propagates.
    """

    _hardware_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"energy method {method!r} is not one of {METHODS}")
        self._method = method
        self._t0: float | None = None
        self._window_ok = False
        self.reading: EnergyReading | None = None

    @property
    def method(self) -> str:
        """The method readings of this meter carry (one of :data:`METHODS`)."""
        return self._method

    @property
    def available(self) -> bool:
        """Whether this meter measures anything (``False``: every reading is unavailable)."""
        return self._method != "unavailable"

    def start(self) -> None:
        """Start a window.

        Raises:
            RuntimeError: if a window is already running.
        """
        if self._t0 is not None:
            raise RuntimeError(f"{type(self).__name__}.start() called twice without stop()")
        self._window_ok = False
        if self.available:
            try:
                self._begin()
                self._window_ok = True
            except self._hardware_errors as err:
                self._warn(err)
        self._t0 = time.perf_counter()

    def stop(self) -> EnergyReading:
        """End the window and return its reading (also kept in ``self.reading``).

        Raises:
            RuntimeError: if no window is running.
        """
        if self._t0 is None:
            raise RuntimeError(f"{type(self).__name__}.stop() called without start()")
        seconds = time.perf_counter() - self._t0
        self._t0 = None
        self.reading = EnergyReading(None, "unavailable", (), seconds)
        if self._window_ok:
            try:
                joules, devices = self._end()
                self.reading = EnergyReading(joules, self._method, tuple(devices), seconds)
            except self._hardware_errors as err:
                self._warn(err)
        return self.reading

    def __enter__(self) -> EnergyMeter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _warn(self, err: BaseException) -> None:
        log.warning("%s: energy not measured in this window: %s", type(self).__name__, err)

    def _begin(self) -> None:
        raise NotImplementedError

    def _end(self) -> tuple[float, tuple[str, ...]]:
        raise NotImplementedError


class UnavailableMeter(EnergyMeter):
    """A meter for machines with no energy source: every reading has ``joules=None``."""

    def __init__(self) -> None:
        super().__init__("unavailable")


class NvmlMeter(EnergyMeter):
    """GPU energy through NVML (package ``nvidia-ml-py``, imported as ``pynvml``).

    The preferred source is the driver's energy counter,
    ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded; Volta and
    newer), read at the start and end of the window: method ``nvml_counter``. When a GPU
    does not support it (NVML raises ``NVMLError``), or with ``force_sampling=True``, a
    background thread samples ``nvmlDeviceGetPowerUsage`` (milliwatts) every
    ``sample_interval_s`` and the samples are integrated with the trapezoid rule over their
    timestamps: method ``nvml_power``. Sampling is less exact: on Ampere (except GA100) and
    newer, NVML reports power averaged over the last second, so short windows are smeared.

    Energy is summed over the measured GPUs. NVML is initialised and shut down around each
    window (``nvmlInit``/``nvmlShutdown``); the sampling thread is always stopped.

    Args:
        gpu_indices: NVML indices of the GPUs to measure. ``None``: the GPUs in
            ``CUDA_VISIBLE_DEVICES`` when it lists integer indices (CUDA rules: an empty
            value hides all GPUs, the list ends at the first invalid index), all GPUs when it
            is unset or lists UUIDs. The indices are NVML's (PCI bus order), which are CUDA's
            when ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.
        nvml: a module-like object with the ``pynvml`` functions used here and ``NVMLError``
            (for tests); ``None`` imports ``pynvml``.
        sample_interval_s: seconds between power samples (sampling only).
        force_sampling: use power sampling even where the energy counter works.
        clock: monotonic clock in seconds used to timestamp power samples (for tests).

    The meter is not available (``available`` is ``False``) when ``pynvml`` is missing,
    NVML does not initialise, no GPU is selected, or a selected GPU cannot be opened.

    Sources: NVML API Reference, ``nvmlDeviceGetTotalEnergyConsumption`` and
    ``nvmlDeviceGetPowerUsage``.
    """

    def __init__(
        self,
        gpu_indices: Sequence[int] | None = None,
        nvml: Any = None,
        sample_interval_s: float = 0.05,
        force_sampling: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if sample_interval_s <= 0:
            raise ValueError(f"sample_interval_s must be > 0 seconds, got {sample_interval_s}")
        self._nvml = nvml if nvml is not None else _import_pynvml()
        self._hardware_errors = (self._nvml.NVMLError,) if self._nvml is not None else ()
        self._indices = list(gpu_indices) if gpu_indices is not None else None
        self._interval_s = sample_interval_s
        self._clock = clock
        self._handles: list[Any] = []
        self._start_mj: list[int] = []
        self._samples: list[tuple[float, float]] = []  # (seconds, watts summed over GPUs)
        self._poller: _Poller | None = None
        super().__init__(self._probe(force_sampling))

    @property
    def devices(self) -> tuple[str, ...]:
        """Names of the measured GPUs, ``("gpu<NVML index>", ...)``."""
        return tuple(f"gpu{i}" for i in self._indices or ())

    def _probe(self, force_sampling: bool) -> str:
        """Find the GPUs and whether their energy counters work; return the method."""
        if self._nvml is None:
            return "unavailable"
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as err:
            log.info("NVML not available: %s", err)
            return "unavailable"
        try:
            if self._indices is None:
                self._indices = _visible_gpu_indices(self._nvml.nvmlDeviceGetCount())
            if not self._indices:
                return "unavailable"
            handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in self._indices]
            if force_sampling:
                return "nvml_power"
            try:
                for handle in handles:
                    self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except self._nvml.NVMLError as err:
                log.info("NVML energy counter not supported (%s); sampling power", err)
                return "nvml_power"
            return "nvml_counter"
        except self._nvml.NVMLError as err:
            log.warning("NVML cannot open GPUs %s: %s", self._indices, err)
            return "unavailable"
        finally:
            self._nvml.nvmlShutdown()

    def _begin(self) -> None:
        self._nvml.nvmlInit()
        try:
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in self._indices]
            if self._method == "nvml_counter":
                self._start_mj = self._read_counters_mj()
            else:
                self._samples = []
                self._sample()
                self._poller = _Poller(self._sample, self._interval_s)
                self._poller.start()
        except BaseException:
            self._nvml.nvmlShutdown()
            raise

    def _end(self) -> tuple[float, tuple[str, ...]]:
        try:
            if self._method == "nvml_counter":
                end_mj = self._read_counters_mj()
                joules = sum(e - s for s, e in zip(self._start_mj, end_mj)) / 1000.0
            else:
                poller, self._poller = self._poller, None
                poller.stop()  # joins the thread; re-raises an NVMLError met on it
                self._sample()
                joules = trapezoid_joules(self._samples)
        finally:
            self._nvml.nvmlShutdown()
        return joules, self.devices

    def _read_counters_mj(self) -> list[int]:
        return [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]

    def _sample(self) -> None:
        t = self._clock()
        milliwatts = sum(self._nvml.nvmlDeviceGetPowerUsage(h) for h in self._handles)
        self._samples.append((t, milliwatts / 1000.0))


class RaplMeter(EnergyMeter):
    """CPU package and DRAM energy from Intel RAPL through Linux powercap (method ``rapl``).

    Reads ``<root>/intel-rapl:N/energy_uj`` (microjoules) of every package domain whose
    ``name`` starts with ``package`` (a ``psys`` domain overlaps the packages and is skipped)
    and of its DRAM subdomain ``intel-rapl:N:M`` whose ``name`` is ``dram``. The core and
    uncore subdomains are parts of the package and are not added again.

    The counters wrap at ``max_energy_range_uj``: a step where a counter went down adds
    ``max_energy_range_uj - previous + current``. A counter that wraps twice between two
    reads loses a whole range, so a reading is valid only if reads are less than one wrap
    period apart (``max_energy_range_uj`` / power, tens of minutes for a package at 100 W).
    A background thread therefore reads the counters every ``poll_interval_s``; with
    ``poll_interval_s=None`` only the window ends are read, and :meth:`poll` can be called
    by hand.

    Args:
        root: the powercap directory.
        poll_interval_s: seconds between background reads, or ``None`` for no thread.

    The meter is not available when no package domain is found or any counter cannot be
    read (since Linux 5.10 ``energy_uj`` is readable by root only).

    Source: Linux kernel documentation, "Power Capping Framework" (``powercap.rst``).
    """

    _hardware_errors = (OSError, ValueError)

    def __init__(self, root: str | os.PathLike = "/sys/class/powercap",
                 poll_interval_s: float | None = 10.0) -> None:
        if poll_interval_s is not None and poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0 seconds or None, got {poll_interval_s}")
        self._interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._last_uj: list[int] = []
        self._total_uj = 0
        self._poller: _Poller | None = None
        try:
            self._domains = _find_rapl_domains(Path(root))
            for domain in self._domains:
                domain.read_uj()
        except (OSError, ValueError) as err:
            log.info("RAPL not readable under %s: %s", root, err)
            self._domains = []
        super().__init__("rapl" if self._domains else "unavailable")

    @property
    def devices(self) -> tuple[str, ...]:
        """Names of the measured domains, e.g. ``("package-0", "dram-0")``."""
        return tuple(d.label for d in self._domains)

    def poll(self) -> None:
        """Read the counters now and add what they advanced since the last read.

        Call it at least once per wrap period in long windows when ``poll_interval_s`` is
        ``None``. Does nothing outside a window.

        Raises:
            OSError, ValueError: if a counter cannot be read.
        """
        with self._lock:
            if not self._last_uj:
                return
            now = [d.read_uj() for d in self._domains]
            for domain, before, after in zip(self._domains, self._last_uj, now):
                self._total_uj += counter_delta(before, after, domain.max_uj)
            self._last_uj = now

    def _begin(self) -> None:
        with self._lock:
            self._total_uj = 0
            self._last_uj = [d.read_uj() for d in self._domains]
        if self._interval_s is not None:
            self._poller = _Poller(self.poll, self._interval_s)
            self._poller.start()

    def _end(self) -> tuple[float, tuple[str, ...]]:
        try:
            if self._poller is not None:
                poller, self._poller = self._poller, None
                poller.stop()
            self.poll()
            return self._total_uj / 1e6, self.devices
        finally:
            self._last_uj = []


class CpuEstimateMeter(EnergyMeter):
    """An ESTIMATE of CPU energy: process CPU time × a power per core (method ``estimate``).

    joules = (user + system CPU seconds of this process and of its waited-for children,
    from ``resource.getrusage``) × ``watts_per_core``. It counts every thread of the
    process; a child's time is added only once the child has exited and been waited for.
    Memory, idle and other processes are not counted. Use it only when no counter exists,
    with the per-core power of the CPU (e.g. TDP / cores).

    Args:
        watts_per_core: power of one fully busy core, in watts (> 0).

    Raises:
        ValueError: if ``watts_per_core`` is not a positive finite number.

    Source: the core term of Green Algorithms, Lannelongue et al., Advanced Science 2021
    (energy = time × cores × power per core × usage).
    """

    def __init__(self, watts_per_core: float) -> None:
        if not (math.isfinite(watts_per_core) and watts_per_core > 0):
            raise ValueError(f"watts_per_core must be a positive number of watts, "
                             f"got {watts_per_core}")
        self.watts_per_core = float(watts_per_core)
        self._cpu0 = 0.0
        super().__init__("estimate")

    def _begin(self) -> None:
        self._cpu0 = process_cpu_seconds()

    def _end(self) -> tuple[float, tuple[str, ...]]:
        return (process_cpu_seconds() - self._cpu0) * self.watts_per_core, ("cpu",)


def make_meter(
    gpu_indices: Sequence[int] | None = None,
    cpu_watts_per_core: float | None = None,
    powercap_root: str | os.PathLike = "/sys/class/powercap",
    nvml: Any = None,
) -> EnergyMeter:
    """Return the best energy meter this machine offers.

    In order: :class:`NvmlMeter` when a GPU is visible and NVML initialises; else
    :class:`RaplMeter` when the powercap counters are readable; else
    :class:`CpuEstimateMeter` when ``cpu_watts_per_core`` (watts) is set; else
    :class:`UnavailableMeter`. Missing hardware never raises.

    Args:
        gpu_indices: NVML indices of the GPUs to measure (``None``: the visible GPUs).
        cpu_watts_per_core: watts per busy core for the estimate; ``None`` disables it.
        powercap_root: the Linux powercap directory.
        nvml: a stand-in for the ``pynvml`` module (tests).

    Raises:
        ValueError: if ``cpu_watts_per_core`` is set but not a positive number.
    """
    meter: EnergyMeter = NvmlMeter(gpu_indices, nvml=nvml)
    if not meter.available:
        meter = RaplMeter(powercap_root)
    if not meter.available and cpu_watts_per_core is not None:
        meter = CpuEstimateMeter(cpu_watts_per_core)
    if not meter.available:
        meter = UnavailableMeter()
    log.info("energy meter: %s %s", meter.method, getattr(meter, "devices", ()))
    return meter


def sum_readings(readings: Sequence[EnergyReading]) -> EnergyReading:
    """One reading for consecutive windows of the same meter (e.g. the epochs of a training).

    Joules and seconds are summed; the result is ``unavailable`` (``joules=None``) when there
    are no readings or any window was not measured, so a partly measured run never reports a
    partial number.

    Raises:
        ValueError: if the measured readings carry different methods (different meters).
    """
    seconds = sum(r.seconds for r in readings)
    if not readings or any(r.joules is None for r in readings):
        return EnergyReading(None, "unavailable", (), seconds)
    methods = {r.method for r in readings}
    if len(methods) > 1:
        raise ValueError(f"cannot add readings of different methods {sorted(methods)}")
    devices = tuple(dict.fromkeys(d for r in readings for d in r.devices))
    return EnergyReading(sum(r.joules for r in readings), methods.pop(), devices, seconds)


# --- Formulas ---------------------------------------------------------------------------

def trapezoid_joules(samples: Sequence[tuple[float, float]]) -> float:
    """Integrate power samples ``(seconds, watts)`` over time with the trapezoid rule.

    joules = Σ (t[k+1] − t[k]) × (P[k] + P[k+1]) / 2, exact for power linear in time between
    samples. Fewer than two samples give 0 J (an empty interval).
    """
    return sum((t1 - t0) * (p0 + p1) / 2.0
               for (t0, p0), (t1, p1) in zip(samples, samples[1:]))


def counter_delta(before: int, after: int, max_range: int) -> int:
    """How far a wrapping energy counter advanced from ``before`` to ``after``.

    ``after - before``, or ``max_range - before + after`` when the counter went down (it
    wrapped once at ``max_range``). Units are the counter's (µJ for RAPL).
    """
    return after - before if after >= before else max_range - before + after


def process_cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children, in seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- Helpers ----------------------------------------------------------------------------

class _Poller:
    """Calls ``fn()`` every ``interval_s`` seconds on a daemon thread until :meth:`stop`.

    The first exception from ``fn`` ends the polling and is re-raised by :meth:`stop`.
    """

    def __init__(self, fn: Callable[[], None], interval_s: float) -> None:
        self._fn = fn
        self._interval_s = interval_s
        self._halt = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="energy-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while not self._halt.wait(self._interval_s):
            try:
                self._fn()
            except BaseException as err:  # handed to the caller by stop()
                self._error = err
                return


@dataclass(frozen=True)
class _RaplDomain:
    label: str  # e.g. "package-0", "dram-0"
    path: Path
    max_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())


def _find_rapl_domains(root: Path) -> list[_RaplDomain]:
    """Package domains ``intel-rapl:N`` under ``root`` and their ``dram`` subdomains."""
    def index(path: Path) -> int:
        return int(path.name.rsplit(":", 1)[1])

    def domain(label: str, path: Path) -> _RaplDomain:
        return _RaplDomain(label, path, int((path / "max_energy_range_uj").read_text()))

    domains = []
    packages = [p for p in root.iterdir() if re.fullmatch(r"intel-rapl:\d+", p.name)]
    for package in sorted(packages, key=index):
        name = (package / "name").read_text().strip()
        if not name.startswith("package"):
            continue
        domains.append(domain(name, package))
        for sub in sorted(package.glob(f"{package.name}:*"), key=index):
            if (sub / "name").read_text().strip() == "dram":
                domains.append(domain(f"dram-{index(package)}", sub))
    return domains


def _visible_gpu_indices(count: int) -> list[int]:
    """NVML indices selected by ``CUDA_VISIBLE_DEVICES`` among ``count`` GPUs."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return list(range(count))
    indices: list[int] = []
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        if not re.fullmatch(r"-?\d+", entry):
            log.warning("CUDA_VISIBLE_DEVICES=%r is not integer indices; measuring all GPUs", value)
            return list(range(count))
        if not 0 <= int(entry) < count:
            break  # CUDA ignores the rest of the list after an invalid index
        if int(entry) not in indices:
            indices.append(int(entry))
    return indices


def _import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError:
        log.info("pynvml (nvidia-ml-py) is not installed; no GPU energy")
        return None
    return pynvml


def check_non_negative(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0 (``name`` says which)."""
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")

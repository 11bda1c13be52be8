"""Energy: meters that measure joules (:mod:`.meters`) and their carbon footprint (:mod:`.carbon`).

Every reading says which method measured it (``nvml_counter``, ``nvml_power``, ``rapl``,
``estimate``, ``unavailable``); an unavailable reading has ``joules=None`` and is never 0 J.
"""

from trainables.energy.carbon import (
    DEFAULT_KG_PER_KWH,
    DEFAULT_PUE,
    JOULES_PER_KWH,
    STRUBELL_PUE,
    co2e_kg,
    energy_metrics,
    strubell_kwh,
)
from trainables.energy.meters import (
    METHODS,
    CpuEstimateMeter,
    EnergyMeter,
    EnergyReading,
    NvmlMeter,
    RaplMeter,
    UnavailableMeter,
    counter_delta,
    make_meter,
    process_cpu_seconds,
    sum_readings,
    trapezoid_joules,
)

__all__ = ["DEFAULT_KG_PER_KWH", "DEFAULT_PUE", "JOULES_PER_KWH", "METHODS", "STRUBELL_PUE", "CpuEstimateMeter",
           "EnergyMeter", "EnergyReading", "NvmlMeter", "RaplMeter", "UnavailableMeter", "co2e_kg", "counter_delta",
           "energy_metrics", "make_meter", "process_cpu_seconds", "strubell_kwh", "sum_readings", "trapezoid_joules"]

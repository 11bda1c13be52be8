"""From joules to the MLflow energy metrics and their carbon footprint.

:func:`energy_metrics` turns meter readings (:class:`trainables.energy.meters.EnergyReading`)
into the metrics and tags named in ``DESIGN.md`` (``energy_j``, ``energy_inference_j_per_1k``,
``co2e_kg``, tag ``energy_method``). A reading without joules yields no metric, never 0 J.

Example:
    >>> round(co2e_kg(3.6e6), 4)  # 1 kWh at PUE 1.59 and 0.430 kg CO2e/kWh
    0.6837
"""

from __future__ import annotations

import math

from trainables.energy.meters import EnergyReading, check_non_negative

#: Defaults of the thesis "Best Way to Squeeze" (IST, 2021), section 3.4.
DEFAULT_PUE = 1.59
DEFAULT_KG_PER_KWH = 0.430
#: Power usage effectiveness used by Strubell et al. (2019), eq. 1.
STRUBELL_PUE = 1.58

JOULES_PER_KWH = 3.6e6


def co2e_kg(joules: float, pue: float = DEFAULT_PUE,
            kg_per_kwh: float = DEFAULT_KG_PER_KWH) -> float:
    """Carbon dioxide equivalent of an energy use, in kg CO2e.

    co2e = kWh × PUE × intensity, with kWh = joules / 3.6e6 (the thesis "Best Way to
    Squeeze", IST 2021, section 3.4; its defaults PUE 1.59 and 0.430 kg CO2e per kWh).

    Args:
        joules: energy measured at the device, in joules.
        pue: power usage effectiveness of the data centre (facility / IT energy, >= 1).
        kg_per_kwh: carbon intensity of the electricity, in kg CO2e per kWh.

    Raises:
        ValueError: on a negative or non-finite input, or a PUE below 1.
    """
    check_non_negative("joules", joules)
    _check_pue(pue)
    check_non_negative("kg_per_kwh", kg_per_kwh)
    return joules / JOULES_PER_KWH * pue * kg_per_kwh


def strubell_kwh(seconds: float, watts: float, pue: float = STRUBELL_PUE) -> float:
    """Energy in kWh as Strubell et al. (2019) compute it, for comparison with their table.

    kWh = PUE × hours × watts / 1000 (Strubell, Ganesh, McCallum, "Energy and Policy
    Considerations for Deep Learning in NLP", ACL 2019, eq. 1, where watts is the summed
    CPU, DRAM and GPU power and PUE is 1.58).

    Args:
        seconds: training time, in seconds.
        watts: average power, in watts.
        pue: power usage effectiveness (>= 1).

    Raises:
        ValueError: on a negative or non-finite input, or a PUE below 1.
    """
    check_non_negative("seconds", seconds)
    check_non_negative("watts", watts)
    _check_pue(pue)
    return pue * (seconds / 3600.0) * watts / 1000.0


def energy_metrics(
    train: EnergyReading,
    inference: EnergyReading | None,
    n_inference_examples: int,
    pue: float = DEFAULT_PUE,
    kg_per_kwh: float = DEFAULT_KG_PER_KWH,
) -> tuple[dict[str, float], dict[str, str]]:
    """MLflow metrics and tags for a trial's energy readings.

    Metrics, each present only when measured:

    - ``energy_j``: training energy, joules.
    - ``energy_inference_j_per_1k``: inference energy per 1000 examples, joules.
    - ``co2e_kg``: :func:`co2e_kg` of the training energy with ``pue`` and ``kg_per_kwh``.
    - ``energy_kwh_strubell``: :func:`strubell_kwh` of the training window with its average
      power (``energy_j`` / seconds) and Strubell's PUE 1.58 (needs a window > 0 s).

    Tags: ``energy_method`` (training reading's method, always), ``energy_devices``
    (comma-separated, when any device was measured) and ``energy_inference_method`` (when an
    inference reading is given).

    Raises:
        ValueError: if an inference reading is given with ``n_inference_examples`` < 1, or
            on a negative ``pue``/``kg_per_kwh`` (see :func:`co2e_kg`).
    """
    metrics: dict[str, float] = {}
    tags = {"energy_method": train.method}
    if train.devices:
        tags["energy_devices"] = ",".join(train.devices)
    if train.joules is not None:
        metrics["energy_j"] = train.joules
        metrics["co2e_kg"] = co2e_kg(train.joules, pue, kg_per_kwh)
        if train.seconds > 0:
            watts = train.joules / train.seconds
            metrics["energy_kwh_strubell"] = strubell_kwh(train.seconds, watts)
    if inference is not None:
        if n_inference_examples < 1:
            raise ValueError(f"n_inference_examples must be >= 1, got {n_inference_examples}")
        tags["energy_inference_method"] = inference.method
        if inference.joules is not None:
            metrics["energy_inference_j_per_1k"] = inference.joules / n_inference_examples * 1000.0
    return metrics, tags


def _check_pue(pue: float) -> None:
    if not (math.isfinite(pue) and pue >= 1):
        raise ValueError(f"pue must be >= 1 (facility energy / IT energy), got {pue}")

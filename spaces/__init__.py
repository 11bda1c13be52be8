"""Search spaces: YAML files in this folder and the module that validates and maps them."""

from pathlib import Path

from spaces.space import (
    DEFAULT_OBJECTIVES,
    DISTRIBUTIONS,
    ENERGY_OBJECTIVES,
    OBJECTIVE_METRICS,
    Dist,
    Space,
    check_trial_configs,
    load_space,
    parse_objectives,
    parse_space,
)

SPACES_DIR = Path(__file__).parent

__all__ = ["DEFAULT_OBJECTIVES", "DISTRIBUTIONS", "ENERGY_OBJECTIVES", "OBJECTIVE_METRICS", "Dist", "Space",
           "SPACES_DIR", "check_trial_configs", "load_space", "parse_objectives", "parse_space"]

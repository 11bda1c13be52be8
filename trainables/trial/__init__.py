"""The trial: one config in, one measured, saved and tracked student out.

- :mod:`.state`: what a trial reads (:class:`TrialData`) and how it is measured (:class:`RunSettings`);
- :mod:`.stages`: :func:`run_trial`, a flat sequence of stages over one :class:`TrialState`;
- :mod:`.checkpoint`: the epoch checkpoint a retried or resumed trial continues from;
- :mod:`.trainable`: the Ray Tune function trainable (imported on demand: it needs Ray).
"""

from trainables.trial.checkpoint import TrialCheckpoint, load_checkpoint
from trainables.trial.stages import Prepared, TrialState, evaluate_saved, prepare, run_trial
from trainables.trial.state import RunSettings, TrialData, seed_everything

__all__ = ["Prepared", "RunSettings", "TrialCheckpoint", "TrialData", "TrialState", "evaluate_saved",
           "load_checkpoint", "prepare", "run_trial", "seed_everything"]

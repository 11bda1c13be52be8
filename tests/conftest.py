"""Shared fixtures: the real GLUE files and MiniLM teachers staged beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FEATHERWEIGHT_SHARED", ROOT.parent / "shared"))
GLUE = SHARED / "data" / "glue"
TEACHERS = SHARED / "teachers"
SST2_TEACHER = TEACHERS / "minilm-l6-sst2"

pytest_plugins = ["store_fixtures"]  # the MLflow store fixtures (store, search, shared_search, ...)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    return GLUE


@pytest.fixture(scope="session")
def sst2_teacher() -> Path:
    return SST2_TEACHER


@pytest.fixture(scope="session")
def sst2_splits():
    from trainables.data.glue import load_split

    return load_split("sst2", "train", GLUE), load_split("sst2", "dev", GLUE)


@pytest.fixture(scope="session")
def sst2_small(sst2_splits):
    """TrialData over 3,000 SST-2 training rows (150 of them held out for validation) and the full
    dev set, with the shipped teacher logits."""
    from trainables.data.glue import Split
    from trainables.trial import TrialData
    from trainables.trial.state import with_validation

    train, dev = sst2_splits
    with np.load(SST2_TEACHER / "logits_sst2.npz") as z:
        train_logits, dev_logits = z["train"], z["dev"]
    n = 3000
    small = Split("sst2", "train", train.text_a[:n], None, train.labels[:n], train.source)
    return with_validation(TrialData(small, dev, train_logits[:n], dev_logits, "minilm-l6-sst2@test", 90_855_944))

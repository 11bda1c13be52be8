"""Data a trial learns from: GLUE splits (:mod:`.glue`), the teacher and its cached logits
(:mod:`.teacher`), teacher-labelled augmentation (:mod:`.augment`) and text helpers (:mod:`.text`)."""

from trainables.data.glue import Split, load_split

__all__ = ["Split", "load_split"]

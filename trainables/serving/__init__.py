"""Students as MLflow models: a pyfunc flavour written as models-from-code (no pickle).

:mod:`.student` turns texts into labels and class probabilities with a student file read by
:func:`trainables.formats.load_student`; :mod:`.pyfunc_model` is the models-from-code file MLflow
copies into every logged student; :mod:`.package` writes such an MLflow model folder (signature,
input example, requirements) around a student file.
"""

from trainables.serving.package import PYFUNC_FILE, input_example, requirements, save_pyfunc, signature
from trainables.serving.student import LABEL_NAMES, StudentPredictor, input_columns

__all__ = ["LABEL_NAMES", "PYFUNC_FILE", "StudentPredictor", "input_columns", "input_example", "requirements",
           "save_pyfunc", "signature"]

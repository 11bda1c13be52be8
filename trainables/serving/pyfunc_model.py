"""The MLflow pyfunc model of a student, written as models-from-code.

MLflow copies this file into every logged student model and runs it on load: no pickle is
involved. The student file is the model's ``student`` artifact, read by
:func:`trainables.formats.load_student`, so the logged MLflow model needs the featherweight
package where it is loaded (``mlflow.pyfunc.load_model``, ``mlflow models serve --env-manager
local``). Input and output: see :mod:`trainables.serving.student`.
"""

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class StudentModel(PythonModel):
    """pyfunc wrapper of :class:`trainables.serving.student.StudentPredictor`."""

    def load_context(self, context: Any) -> None:
        """Read the student file (artifact ``student``) with the project's safe reader."""
        from trainables.serving.student import StudentPredictor

        self.predictor = StudentPredictor.from_file(context.artifacts["student"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """A table of texts -> ``label``, ``label_name``, ``probabilities`` (one row per input row).

        (``pandas.DataFrame`` is a type hint MLflow infers no schema from: the logged signature is the schema.)
        """
        return self.predictor.predict(model_input)


mlflow.models.set_model(StudentModel())

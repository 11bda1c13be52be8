"""Students and their token encoders: embeddings, BiLSTM/RNN/FFN students, the truncated transformer.

Importing this package registers every encoder kind (:data:`.embeddings.ENCODER_LOADERS`),
the WordPiece encoder of :mod:`.transformer` included.
"""

from trainables.models import embeddings, students, transformer
from trainables.models.embeddings import TextEncoder, build_encoder, encoder_from_json
from trainables.models.students import STUDENT_BUILDERS, Student, build_student, count_params
from trainables.models.transformer import TransformerStudent, WordPieceEncoder

__all__ = ["STUDENT_BUILDERS", "Student", "TextEncoder", "TransformerStudent", "WordPieceEncoder", "build_encoder",
           "build_student", "count_params", "embeddings", "encoder_from_json", "students", "transformer"]

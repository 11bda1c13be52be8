"""Student files: dense, packed (pruned/quantized) and transformer formats behind one registry.

:func:`save_student` writes a student uncompressed in its class's format; :func:`load_student`
reads any registered format. Importing this package registers all three formats.
"""

from trainables.formats import dense, packed, transformer
from trainables.formats.base import file_sizes, load_student, read_metadata, save_student, student_metadata
from trainables.formats.dense import ARTIFACT_NAME
from trainables.formats.packed import ARTIFACT_NAME as PACKED_NAME
from trainables.formats.packed import load_packed, save_packed, size_breakdown

__all__ = ["ARTIFACT_NAME", "PACKED_NAME", "dense", "file_sizes", "load_packed", "load_student", "packed",
           "read_metadata", "save_packed", "save_student", "size_breakdown", "student_metadata", "transformer"]

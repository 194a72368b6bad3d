"""Data: formats and their schemas, reading sources, and mixing them into training sets."""

from align_train.data.formats import FORMATS, infer_format, normalise_row
from align_train.data.mixture import DataBundle, load_data

__all__ = ["FORMATS", "DataBundle", "infer_format", "load_data", "normalise_row"]

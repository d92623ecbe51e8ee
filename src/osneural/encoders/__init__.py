"""Encoders: export Hugging Face checkpoints to ONNX, run them with onnxruntime + tokenizers.

Only the runtime is imported eagerly-cheap here; `export` (torch) is imported on demand.
"""

from osneural.encoders.defaults import (
    DEFAULT_DIRS,
    default_checkpoint,
    default_export_dir,
    ensure_default_models,
    list_models,
    load_default,
)
from osneural.encoders.errors import (
    CheckpointError,
    EncoderError,
    EncoderInputError,
    ExportError,
    ModelNotFoundError,
)
from osneural.encoders.idf import IdfTable
from osneural.encoders.manifest import read_manifest
from osneural.encoders.runtime import (
    DenseEncoder,
    EncodeStats,
    MultiVectorEncoder,
    SparseEncoder,
    load_encoder,
)

__all__ = [
    "DEFAULT_DIRS",
    "CheckpointError",
    "DenseEncoder",
    "EncodeStats",
    "EncoderError",
    "EncoderInputError",
    "ExportError",
    "IdfTable",
    "ModelNotFoundError",
    "MultiVectorEncoder",
    "SparseEncoder",
    "default_checkpoint",
    "default_export_dir",
    "ensure_default_models",
    "list_models",
    "load_default",
    "load_encoder",
    "read_manifest",
]

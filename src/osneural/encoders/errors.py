"""Exceptions raised by the encoders, so callers can tell bad input from a broken install."""

from __future__ import annotations

from osneural.errors import EncoderError

__all__ = ["CheckpointError", "EncoderError", "EncoderInputError", "ExportError",
           "ModelNotFoundError"]


class CheckpointError(EncoderError):
    """A checkpoint folder cannot be exported: missing tokenizer, unknown architecture, ..."""


class ExportError(EncoderError):
    """The ONNX export ran but its output cannot be trusted (parity too poor, ...)."""


class ModelNotFoundError(EncoderError, FileNotFoundError):
    """An exported model (or the weights to export it from) is not where it should be."""


class EncoderInputError(EncoderError, ValueError):
    """A text handed to an encoder is not usable (wrong type, invalid UTF-8)."""

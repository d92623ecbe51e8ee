"""JSON-safe storage of codec parameters, and the input checks every codec shares.

Codecs are stored in an OpenSearch companion document, so everything must survive a JSON round
trip. Arrays travel as base64 of `.npy` bytes (`np.save`, read back with `allow_pickle=False`):
the `.npy` header carries dtype and shape, so nothing is lost, and pickle is never involved, so a
tampered document cannot execute code on a query node.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

#: Version of the dict layout written by every codec's `to_dict`; bump on incompatible change.
FORMAT_VERSION = 1


def array_to_b64(array: np.ndarray) -> str:
    """Encode an array as base64 of its `.npy` bytes (dtype and shape included).

    Args:
        array: any non-object numpy array (object arrays would need pickle: a ValueError).

    Returns:
        ASCII base64 text that `b64_to_array` turns back into an equal array.

    Example:
        >>> text = array_to_b64(np.arange(6, dtype=np.uint8).reshape(2, 3))
        >>> b64_to_array(text)
        array([[0, 1, 2],
               [3, 4, 5]], dtype=uint8)
    """
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise ValueError("object arrays cannot be serialized without pickle")
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def b64_to_array(text: str) -> np.ndarray:
    """Decode `array_to_b64` output; refuses pickled payloads.

    Args:
        text: base64 of `.npy` bytes.

    Returns:
        The array with the dtype and shape it was written with. A ValueError for text that is not
        base64 or not a pickle-free `.npy` payload.

    Example:
        >>> b64_to_array(array_to_b64(np.array([1.5, -2.0], dtype=np.float16)))
        array([ 1.5, -2. ], dtype=float16)
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"not a base64 .npy payload: {exc}") from exc
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"not a valid pickle-free .npy payload: {exc}") from exc


def load_array(text: str | None, shape: tuple[int, ...], name: str, kind: str) -> np.ndarray:
    """`b64_to_array` of a codec field that must have `shape` (floats come back float32).

    Args:
        text: the field's base64 payload, None when the dict lacks it.
        shape: the shape the codec's parameters require.
        name: the field's name, for the error message.
        kind: the codec's kind, for the error message.

    Returns:
        The array (float32 for any float dtype). A ValueError naming the codec and the field when
        it is missing or has another shape.

    Example:
        >>> load_array(array_to_b64(np.zeros((2, 4))), (2, 4), "centroids", "pq").dtype
        dtype('float32')
    """
    if text is None:
        raise ValueError(f"{kind}: dict lacks {name}")
    array = b64_to_array(text)
    if array.shape != shape:
        raise ValueError(f"{kind}: {name} has shape {array.shape}, expected {shape}")
    return array.astype(np.float32) if array.dtype.kind == "f" else array


def header(kind: str) -> dict[str, Any]:
    """The fields every codec dict starts with, so a loader can dispatch and refuse mismatches.

    Args:
        kind: the codec's kind (`"pq"`, `"binary"`, ...).

    Returns:
        `{"kind": kind, "version": FORMAT_VERSION}`.

    Example:
        >>> header("pq") == {"kind": "pq", "version": FORMAT_VERSION}
        True
    """
    return {"kind": kind, "version": FORMAT_VERSION}


def check_header(data: dict[str, Any], kind: str) -> None:
    """Refuse a dict written for another codec or by an incompatible version.

    Args:
        data: a codec dict as read from the companion document.
        kind: the kind the caller is about to load.

    Returns:
        None; a ValueError naming the kind or version found when `data` is not a dict of this
        kind at `FORMAT_VERSION`.

    Example:
        >>> check_header({"kind": "pq", "version": FORMAT_VERSION, "m": 8}, "pq")
    """
    if not isinstance(data, dict):
        raise ValueError(f"{kind}: expected a dict, got {type(data).__name__}")
    if data.get("kind") != kind:
        raise ValueError(f"{kind}: dict has kind {data.get('kind')!r}, expected {kind!r}")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{kind}: dict has version {data.get('version')!r}, this build reads {FORMAT_VERSION}"
        )


def as_matrix(x: Any, name: str, dim: int | None = None, min_rows: int = 1) -> np.ndarray:
    """Float32 C-contiguous [n, dim] view of `x`, or a ValueError naming what is wrong.

    Codecs turn NaN into plausible-looking codes (sign bits, nearest centroids), so garbage would
    otherwise pass silently into the index; we check here, once, at the boundary.

    Args:
        x: array-like of numbers, [n, dim].
        name: what the caller calls it, for the error message.
        dim: the required dimension, if any.
        min_rows: the fewest rows accepted.

    Returns:
        float32 C-contiguous [n, dim]. A ValueError for non-numeric input, another rank or
        dimension, too few rows, or a non-finite value (its row and column named).

    Example:
        >>> as_matrix([[1, 2], [3, 4]], "vectors", dim=2)
        array([[1., 2.],
               [3., 4.]], dtype=float32)
    """
    array = np.asarray(x)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a numeric array, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [n, dim], got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name}: expected dimension {dim}, got {array.shape[1]}")
    if array.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} row(s), got {array.shape[0]}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(
            f"{name}: non-finite value {array[row, col]} at row {row}, column {col} "
            f"({int((~finite.all(axis=1)).sum())} bad row(s))"
        )
    return array


def as_vector(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """Float32 [dim] vector, checked like `as_matrix`.

    Args:
        x: array-like of numbers, [dim].
        name: what the caller calls it, for the error message.
        dim: the required dimension, if any.

    Returns:
        float32 [dim]; a ValueError as `as_matrix` raises, or for input that is not 1-D.

    Example:
        >>> as_vector([0.5, 1], "query", dim=2)
        array([0.5, 1. ], dtype=float32)
    """
    array = np.asarray(x)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D vector, got shape {array.shape}")
    return as_matrix(array[None, :], name, dim)[0]

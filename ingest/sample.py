"""The sample corpus: docstrings of Python standard-library modules, extracted at run time.

Why docstrings: every machine with Python has them, they are real technical prose (so dense,
sparse and BM25 retrieval behave as on real data), and the README's main command needs no
download. The module list is fixed and the walk is sorted, so ids (`json.dumps`,
`collections.OrderedDict.move_to_end`) are stable; the text itself follows the running Python
version, which is fine for a demo.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Any

#: Modules whose import has no side effects (no GUI, no network, no printing), ~1000-1500 docs.
SAMPLE_MODULES: tuple[str, ...] = (
    "abc", "argparse", "array", "base64", "bisect", "bz2", "calendar", "cmath", "codecs",
    "collections", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "enum", "fnmatch", "fractions", "functools", "getopt", "gettext",
    "glob", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser", "http.client",
    "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging", "lzma", "math",
    "mimetypes", "numbers", "operator", "pathlib", "pickle", "platform", "pprint", "queue",
    "random", "re", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "socket",
    "sqlite3", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "time", "timeit", "tomllib", "traceback", "types", "typing",
    "unicodedata", "urllib.parse", "uuid", "warnings", "weakref", "xml.etree.ElementTree",
    "zipfile", "zlib",
)

#: Docstrings shorter than this are one-liners like "Return self." that carry no meaning.
MIN_DOC_CHARS = 40


def _doc(obj: Any) -> str:
    try:
        doc = inspect.getdoc(obj)
    except Exception:  # noqa: BLE001 - exotic descriptors can fail; they are just skipped
        return ""
    return doc.strip() if doc else ""


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def _owned(obj: Any, module_name: str) -> bool:
    """True for objects defined in the module itself (or its C accelerator `_name`)."""
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str):
        return False
    base = module_name.rsplit(".", 1)[-1]
    return owner == module_name or owner in (f"_{base}", f"_{module_name}")


def _entry(doc_id: str, kind: str, obj: Any, module: str) -> dict[str, Any] | None:
    text = _doc(obj)
    if len(text) < MIN_DOC_CHARS:
        return None
    sig = _signature(obj) if callable(obj) else ""
    return {
        "_id": doc_id,
        "title": f"{doc_id}{sig}" if sig else doc_id,
        "text": text,
        "metadata": {"module": module, "kind": kind},
    }


def _module_docs(name: str) -> list[dict[str, Any]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except ImportError:
        return []
    out: list[dict[str, Any]] = []
    head = _entry(name, "module", module, name)
    if head:
        out.append(head)
    public = getattr(module, "__all__", None)
    names = sorted(public) if isinstance(public, list | tuple) else sorted(vars(module))
    for attr in names:
        if attr.startswith("_"):
            continue
        obj = getattr(module, attr, None)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)) or not _owned(obj, name):
            continue
        kind = "class" if inspect.isclass(obj) else "function"
        entry = _entry(f"{name}.{attr}", kind, obj, name)
        if entry:
            out.append(entry)
        if inspect.isclass(obj):
            for meth in sorted(vars(obj)):
                member = vars(obj)[meth]
                if meth.startswith("_") or not (inspect.isroutine(member) or isinstance(member, property)):
                    continue
                entry = _entry(f"{name}.{attr}.{meth}", "method", getattr(obj, meth, member), name)
                if entry:
                    out.append(entry)
    return out


def sample_corpus(limit: int | None = None) -> list[dict[str, Any]]:
    """Documents (`_id`, `title`, `text`, `metadata`) of the stdlib docstrings, in a fixed order.

    `limit` keeps the first N (module order, then name order), so a small demo stays a stable
    prefix of the large one. Ids are unique: a name reachable twice keeps its first entry.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    docs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name in SAMPLE_MODULES:
        for doc in _module_docs(name):
            if doc["_id"] in seen:
                continue
            seen.add(doc["_id"])
            docs.append(doc)
            if limit is not None and len(docs) >= limit:
                return docs
    return docs

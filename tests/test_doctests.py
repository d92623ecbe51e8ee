"""The examples in the docstrings of the small pure modules run and print what they show.

A docstring example that drifts from the code misleads more than none; running them here keeps
them true (`pytest --doctest-modules` would need the modules' import paths set up per folder, so
the modules are imported as the package exposes them and handed to `doctest`)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ("osneural.eval.metrics", "osneural.plugin.fusion", "osneural.codecs.serialization")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted >= 4, f"{name}: expected an example per public function"
    assert result.failed == 0, f"{name}: {result.failed} docstring example(s) failed (see output)"


@pytest.mark.parametrize("name", MODULES)
def test_every_public_function_has_an_example_and_sections(name: str) -> None:
    import inspect

    module = importlib.import_module(name)
    missing = []
    for fname, fn in inspect.getmembers(module, inspect.isfunction):
        if fname.startswith("_") or fn.__module__ != module.__name__:
            continue
        doc = inspect.getdoc(fn) or ""
        for section in ("Args:", "Returns:", ">>> "):
            if section not in doc:
                missing.append(f"{fname}: {section}")
    assert missing == []

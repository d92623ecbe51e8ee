"""Query side: first stages, fusion, rescoring, and the interfaces (Python, CLI, HTTP)."""

from osneural.plugin.searcher import Searcher, SearchError
from osneural.plugin.spec import PipelineSpec, SpecError, load_spec, parse_spec

__all__ = ["PipelineSpec", "SearchError", "Searcher", "SpecError", "load_spec", "parse_spec"]

"""osneural: neural retrieval inside the OpenSearch cluster you already run."""

__version__ = "0.1.0"

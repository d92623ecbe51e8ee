"""Query side: first stages, fusion, rescoring, and the interfaces (Python, CLI, HTTP)."""

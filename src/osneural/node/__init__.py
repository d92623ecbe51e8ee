"""A local OpenSearch without Docker: fetched from Maven Central, cached, started on loopback.

Used by `osneural opensearch start|stop|status`, by the README's demo and by the test fixture.
"""

from osneural.node.errors import NodeError

__all__ = ["NodeError"]

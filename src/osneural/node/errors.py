"""One exception type whose message is the single line a user sees."""

from osneural.errors import NodeError  # something the user must fix (no Java, port taken, ...)

__all__ = ["NodeError"]

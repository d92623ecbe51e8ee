"""One exception type whose message is the single line a user sees."""


class NodeError(RuntimeError):
    """Something the user must fix (no Java, port taken, no route to Maven Central...)."""

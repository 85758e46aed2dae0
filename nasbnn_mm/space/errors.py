"""The one error type of the search-space package."""

__all__ = ['ArchitectureError', 'short_repr']


class ArchitectureError(ValueError):
    """A malformed or out-of-space architecture or search space. The message is one line."""


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages that quote user input."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit - 3] + '...'

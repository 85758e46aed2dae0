"""The one error type of the search-space package."""

__all__ = ['ArchitectureError', 'short_repr']


class ArchitectureError(ValueError):
    """A malformed or out-of-space architecture or search space. The message is one line."""


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages that quote user input."""
    try:
        r = repr(value)
    except ValueError:  # an int of more digits than Python converts to text
        r = f'<an integer of ~{int(value.bit_length() * 0.30103)} digits>'
    return r if len(r) <= limit else r[:limit - 3] + '...'

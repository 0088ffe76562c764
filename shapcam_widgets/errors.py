"""The one exception type the library raises for bad input."""


class ShapCAMError(ValueError):
    """Bad input: the message says what was wrong and what is valid."""

"""The one exception type the interfaces turn into a one-line message and a non-zero exit."""


class NetbootError(Exception):
    """A problem the user can act on: bad input, a missing file, an unsupported model."""


class FormatError(NetbootError):
    """A model file that is truncated, corrupt or not of the format it claims."""


class UnsupportedError(NetbootError):
    """A model that is well-formed but uses something netboot does not run (architecture, tensor type)."""

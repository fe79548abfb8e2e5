"""The version of the ``foundation`` distribution."""

__version__ = "0.1.0"

"""The tenant memory API: one process serves exactly one tenant."""

__version__ = "0.1.0"

"""Kopf operator that reconciles MemoryNamespace resources."""

__version__ = "0.1.0"

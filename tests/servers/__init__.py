"""Launchers for the real servers the tests run against (see docs/TESTING.md)."""

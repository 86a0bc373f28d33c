"""The runtime's environment: every variable is MEMORY_<field of the runtime's
Settings, upper-cased>. The operator renders them (ConfigMap, Secrets);
tests/unit/test_contract.py renders them and loads them with the runtime's Settings."""

from __future__ import annotations

ENV_PREFIX = "MEMORY_"


def env_name(field: str) -> str:
    """The variable that sets a Settings field: vector_dimensions -> MEMORY_VECTOR_DIMENSIONS."""
    return ENV_PREFIX + field.upper()


def field_name(variable: str) -> str:
    """The Settings field a variable sets (the inverse of env_name)."""
    if not variable.startswith(ENV_PREFIX):
        raise ValueError(f"{variable!r} does not start with {ENV_PREFIX}")
    return variable.removeprefix(ENV_PREFIX).lower()

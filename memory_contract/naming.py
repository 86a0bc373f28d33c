"""The tenant name rule and the names both sides derive from it."""

from __future__ import annotations

import re

# Lower-case letters, digits and dashes, starting with a letter and not ending
# with a dash, at most 40 characters: derived Kubernetes names must be DNS labels,
# and every derived name (SQL identifier, topic, ACL user) must fit its system's
# limit. The CRD's pattern and CEL rule spell the same expression
# (tests/unit/test_contract.py).
TENANT_MAX_CHARS = 40
TENANT_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
TENANT_RULE = (
    "lowercase letters, digits and dashes, starting with a letter, not ending with a dash,"
    f" at most {TENANT_MAX_CHARS} characters"
)

# The operator's default name prefix (SOMAFRACTAL_NAME_PREFIX); a runtime started
# without the operator derives its names with it too.
DEFAULT_PREFIX = "mem"

RUNTIME_PORT = 9595  # the memory API
METRICS_PORT = 9596  # Prometheus metrics


def is_tenant(name: str) -> bool:
    return TENANT_PATTERN.match(name) is not None


def sql_name(prefix: str, tenant: str) -> str:
    """The tenant's PostgreSQL schema and role, and its Qdrant collection."""
    return f"{prefix}_{tenant.replace('-', '_')}"


def key_prefix(prefix: str, tenant: str) -> str:
    """The prefix of the tenant's Redis keys (its ACL user may touch only these)."""
    return f"{prefix}:{tenant}"

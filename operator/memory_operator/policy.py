"""What a CR author may choose, bounded by the operator's configuration. Pure.

A CR author may be allowed to write MemoryNamespaces without being allowed to
run pods or read Secrets; the operator must not do those things for them
beyond what the administrator allowed (docs/THREAT-MODEL.md). A refusal is a
permanent InvalidSpecError with its own reason, checked before anything is
created.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from memory_operator.config import OperatorConfig
from memory_operator.kube_types import Secret
from memory_operator.spec import InvalidSpecError, MemoryNamespaceSpec

# A Secret named by spec.api.tokenSecretRef opts in with this label, valued with
# the name of the MemoryNamespace allowed to use it.
TOKEN_SECRET_LABEL = "memory.somafractal.io/memory-namespace"


def image_allowed(image: str, config: OperatorConfig) -> bool:
    """The configured runtime image, an exact allow-list entry, or under an entry's
    prefix (an entry ending in "*")."""
    if image == config.runtime_image:
        return True
    for entry in config.runtime_image_allowlist:
        if image == entry or (entry.endswith("*") and image.startswith(entry[:-1])):
            return True
    return False


def embedding_url_allowed(url: str, config: OperatorConfig) -> bool:
    """Same scheme, host and port as an allow-list prefix, and a path under its path.
    Parsed, not compared as text: "https://e.example" must not admit
    "https://e.example.evil.test"."""
    if not config.embedding_url_allowlist:
        return True
    try:
        got = urlsplit(url)
        got_port = got.port
    except ValueError:
        return False
    for prefix in config.embedding_url_allowlist:
        want = urlsplit(prefix)
        if (
            got.scheme == want.scheme
            and got.hostname == want.hostname
            and got_port == want.port
            and got.username is None
            and _path_under(got.path, want.path)
        ):
            return True
    return False


def _path_under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def check_policy(spec: MemoryNamespaceSpec, config: OperatorConfig) -> None:
    """Raise InvalidSpecError when the spec asks for more than the operator allows."""
    if spec.api.image and not image_allowed(spec.api.image, config):
        allowed = ", ".join((config.runtime_image, *config.runtime_image_allowlist))
        raise InvalidSpecError(
            "ImageNotAllowed",
            f"spec.api.image {spec.api.image!r} is not in the operator's allow-list"
            f" ({allowed}; SOMAFRACTAL_RUNTIME_IMAGE_ALLOWLIST)",
        )
    if spec.embedding.provider == "http" and not embedding_url_allowed(spec.embedding.url, config):
        raise InvalidSpecError(
            "EmbeddingUrlNotAllowed",
            f"spec.embedding.url {spec.embedding.url!r} is not under a URL prefix the operator"
            f" allows ({', '.join(config.embedding_url_allowlist)};"
            " SOMAFRACTAL_EMBEDDING_URL_ALLOWLIST)",
        )
    qdrant = config.qdrant
    if (
        spec.vectors.backend == "qdrant"
        and qdrant is not None
        and qdrant.isolation_required
        and not qdrant.isolated
    ):
        raise InvalidSpecError(
            "QdrantNotIsolated",
            f"Qdrant at {qdrant.url} gives tenants no per-tenant scoping"
            f" ({qdrant_isolation_gap(config)}): every tenant could read every"
            " collection. Configure an API key with JWT RBAC, set"
            " SOMAFRACTAL_QDRANT_TENANT_ISOLATION=off to accept that, or use"
            " vectors.backend: postgres",
        )


def qdrant_isolation_gap(config: OperatorConfig) -> str:
    """Why tenants are not isolated in Qdrant ('' when they are)."""
    qdrant = config.qdrant
    if qdrant is None or qdrant.isolated:
        return ""
    if not qdrant.api_key:
        return "no SOMAFRACTAL_QDRANT_API_KEY"
    return "SOMAFRACTAL_QDRANT_TENANT_AUTH=api-key hands every tenant the admin key"


def token_secret_opted_in(secret: Secret | None, cr_name: str) -> bool:
    labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(TOKEN_SECRET_LABEL) == cr_name

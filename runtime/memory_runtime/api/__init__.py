"""HTTP layer: FastAPI app factory, auth, problem+json errors, routes."""

from memory_runtime.api.app import create_app

__all__ = ["create_app"]

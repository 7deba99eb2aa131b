"""The HTTP API (FastAPI). Thin: parse, call a handler or a query, shape the answer."""

from flashorder.entrypoints.api.app import create_app

__all__ = ["create_app"]

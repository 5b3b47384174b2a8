"""aiohttp front end: app factory, the endpoints, the upstream client, errors in the caller's shape."""
from .app import create_app

__all__ = ["create_app"]

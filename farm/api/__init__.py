"""HTTP API: an app factory, one router per resource, errors mapped in one handler."""

from farm.api.app import create_app

__all__ = ["create_app"]

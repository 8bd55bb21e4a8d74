"""farm: an elastic build farm. Jobs over HTTP, a Redis-backed queue, Ray executors."""

__version__ = "0.1.0"

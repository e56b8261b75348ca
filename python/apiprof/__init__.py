"""apiprof: a profiler for FastAPI and other ASGI services, with a C core."""

from ._timer import timer

__all__ = ["timer"]
__version__ = "0.1.0"

"""apiprof: a profiler for FastAPI and other ASGI services, with a C core."""

from ._profiler import Profiler
from ._timer import timer

__all__ = ["Profiler", "timer"]
__version__ = "0.1.0"

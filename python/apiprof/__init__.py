"""apiprof: a profiler for FastAPI and other ASGI services, with a C core."""

from ._lines import LineProfiler, profile
from ._profiler import Profiler
from ._timer import timer

__all__ = ["LineProfiler", "Profiler", "profile", "timer"]
__version__ = "0.1.0"

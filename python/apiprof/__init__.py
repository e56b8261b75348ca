"""apiprof: a profiler for FastAPI and other ASGI services, with a C core."""

from ._diff import Diff, FunctionDelta, diff
from ._lines import LineProfiler, profile
from ._profiler import Profiler
from ._timer import timer

__all__ = ["Diff", "FunctionDelta", "LineProfiler", "Profiler", "diff", "profile", "timer"]
__version__ = "0.1.0"

"""calls_app.py behind apiprof's middleware with on-demand profiles (APIPROF_TOKEN)."""

from __future__ import annotations

import os

from apiprof.asgi import ProfilerMiddleware
from calls_app import app as calls

app = ProfilerMiddleware(calls, token=os.environ["APIPROF_TOKEN"])

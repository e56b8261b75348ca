"""waits_app.py behind apiprof's middleware: on-demand profiles and the dashboard
(APIPROF_TOKEN), the route statistics written to APIPROF_STATS_DIR."""

from __future__ import annotations

import os

from apiprof.asgi import ProfilerMiddleware
from waits_app import app as waits

app = ProfilerMiddleware(waits, token=os.environ["APIPROF_TOKEN"],
                         stats_dir=os.environ["APIPROF_STATS_DIR"], flush_s=0.2, dashboard=True)

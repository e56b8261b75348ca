"""stall_app under apiprof's ASGI middleware, options from $APIPROF_TEST_OPTIONS (JSON):
the always-on statistics count each route's event-loop stalls."""

from __future__ import annotations

import json
import os

from apiprof.asgi import ProfilerMiddleware
from stall_app import app

app.add_middleware(ProfilerMiddleware,  # type: ignore[arg-type]
                   **json.loads(os.environ.get("APIPROF_TEST_OPTIONS", "{}")))

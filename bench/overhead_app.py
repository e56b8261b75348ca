"""The shop app (examples/shop) with one middleware variant, for middleware_overhead.py.

BENCH_VARIANT: none | apiprof | apiprof-nowatch | apiprof-sampled | apiprof-memory |
fastapi-profiler | pyinstrument (apiprof-sampled: apiprof's, with apiprof-spy attached
during each run; apiprof-nowatch: apiprof's without the stall watchdog, stall_stacks=False). The
shop's own route timer is off in every variant, so that only the middleware under test
differs.
"""

from __future__ import annotations

import os

os.environ["SHOP_ROUTE_TIMER"] = "0"
os.environ["SHOP_APIPROF"] = "0"

from fastapi import Request  # noqa: E402
from fastapi.responses import HTMLResponse  # noqa: E402
from shop.app import app  # noqa: E402

VARIANT = os.environ.get("BENCH_VARIANT", "none")

if VARIANT in ("apiprof", "apiprof-sampled"):  # statistics only: no token, no slow capture
    from apiprof.fastapi import instrument

    instrument(app)
elif VARIANT == "apiprof-nowatch":  # statistics, no stall watchdog thread
    from apiprof.fastapi import instrument

    instrument(app, stall_stacks=False)
elif VARIANT == "apiprof-memory":  # statistics and request memory (sampled, 512 KiB)
    from apiprof.fastapi import instrument

    instrument(app, memory=True)
elif VARIANT == "fastapi-profiler":  # its timing statistics, no profile per request
    from fastapi_profiler import PyInstrumentProfilerMiddleware

    app.add_middleware(
        PyInstrumentProfilerMiddleware, server_app=app, profiler_sample_rate=0.0,
        always_profile_errors=False, is_print_each_request=False,
    )
elif VARIANT == "pyinstrument":  # the recipe of pyinstrument's docs: profile on ?profile=1
    from pyinstrument import Profiler

    @app.middleware("http")
    async def profile_request(request: Request, call_next):
        if request.query_params.get("profile", False):
            profiler = Profiler()
            profiler.start()
            await call_next(request)
            profiler.stop()
            return HTMLResponse(profiler.output_html())
        return await call_next(request)
elif VARIANT != "none":
    raise SystemExit(f"unknown BENCH_VARIANT {VARIANT!r}")

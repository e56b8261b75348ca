"""apiprof.fastapi: ``instrument(app, **options)`` adds apiprof's ASGI middleware to a
FastAPI (or Starlette) app. The options are those of apiprof.asgi.ProfilerMiddleware;
they are checked here, so a bad option fails when the app is built, not at its first
request."""

from __future__ import annotations

from typing import Any

from .asgi import Options, ProfilerMiddleware


def instrument(app: Any, **options: Any) -> Any:
    """Adds ProfilerMiddleware to ``app`` (outermost of the app's own middleware) and
    returns ``app``. Raises apiprof.errors.ConfigurationError (or TypeError for an unknown
    option) at once."""
    Options(**options)  # validates now; the app builds its middleware at start-up
    app.add_middleware(ProfilerMiddleware, **options)
    return app

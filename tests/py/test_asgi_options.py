"""apiprof.asgi.Options: the middleware's options declared once, checked together."""

from __future__ import annotations

import inspect

import pytest
from apiprof.asgi import Options, ProfilerMiddleware
from apiprof.errors import ConfigurationError
from apiprof.fastapi import instrument


async def _app(scope, receive, send):  # pragma: no cover
    return None


def test_middleware_signature_lists_every_option():
    params = inspect.signature(ProfilerMiddleware).parameters
    assert list(params)[0] == "app"
    options = {k: p.default for k, p in params.items() if k != "app"}
    assert options == {k: p.default for k, p in inspect.signature(Options).parameters.items()}
    assert options["dashboard_path"] == "/_apiprof" and options["max_profiles"] == 64


def test_options_are_checked_before_the_app_is_touched():
    class App:
        added = False

        def add_middleware(self, *args, **kwargs):
            self.added = True

    app = App()
    with pytest.raises(TypeError, match="bogus"):
        instrument(app, bogus=1)
    with pytest.raises(ConfigurationError, match="needs a token"):
        instrument(app, dashboard=True)
    assert not app.added
    assert instrument(app, token="t" * 16, dashboard=True) is app and app.added


def test_middleware_keeps_its_checked_options():
    mw = ProfilerMiddleware(_app, token="t" * 16, slow_ms=50, stats_dir=None)
    assert mw.options.slow_ms == 50 and mw.slow_candidates == 0 and mw.slow_kept == 0
    with pytest.raises(ConfigurationError, match="token must be"):
        ProfilerMiddleware(_app, token="short")

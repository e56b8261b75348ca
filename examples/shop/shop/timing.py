"""apiprof.timer and apiprof.fastapi.instrument for the shop when apiprof is installed;
no-ops with the same surface otherwise."""

from __future__ import annotations

import contextlib
from typing import Any

try:
    from apiprof import timer
    from apiprof.fastapi import instrument
except ImportError:  # apiprof not installed: same surface, records nothing

    class _Block(contextlib.ContextDecorator):
        def __enter__(self) -> _Block:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def start(self) -> _Block:
            return self

        def stop(self) -> None:
            return None

    class _NoTimer:
        def __call__(self, name: Any = None) -> Any:
            return name if callable(name) else _Block()

        def report(self) -> str:
            return ""

        def stats(self) -> dict[str, Any]:
            return {}

        def reset(self) -> None:
            return None

    timer = _NoTimer()  # type: ignore[assignment]

    def instrument(app: Any, **options: Any) -> Any:  # type: ignore[misc]
        return app

__all__ = ["instrument", "timer"]

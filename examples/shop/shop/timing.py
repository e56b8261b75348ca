"""The block timer used by the shop: ``apiprof.timer`` when installed, a no-op otherwise."""

from __future__ import annotations

import contextlib
from typing import Any

try:
    from apiprof import timer
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

__all__ = ["timer"]

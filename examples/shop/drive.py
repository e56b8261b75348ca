"""Traffic driver for the shop: hits every route with realistic parameters, checks statuses.

    python examples/shop/drive.py http://127.0.0.1:8000 [--rounds N]

Prints one line per route and exits non-zero if any request got an unexpected status.
Importable: ``drive(base_url, rounds) -> {route: successful requests}``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

ZONES = ("domestic", "eu", "world")
ACCOUNTS = {
    "alice@example.com": "correct horse battery staple",
    "bob@example.com": "hunter2hunter2",
}
RESERVE_BURST = 8  # concurrent reservations per round: what makes the inventory lock contend


class DriveError(Exception):
    """Some requests got an unexpected status; ``str()`` lists them."""


@dataclass
class RouteStats:
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class Driver:
    def __init__(self, client: httpx.Client, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.stats: dict[str, RouteStats] = {}

    def call(
        self, route: str, method: str, url: str, expect: int = 200, **kwargs: Any
    ) -> httpx.Response | None:
        stats = self.stats.setdefault(route, RouteStats())
        started = time.perf_counter()
        try:
            resp = self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            stats.failed += 1
            stats.errors.append(f"{method} {url}: {type(exc).__name__}: {exc}")
            return None
        finally:
            stats.seconds += time.perf_counter() - started
        if resp.status_code != expect:
            stats.failed += 1
            stats.errors.append(f"{method} {url}: {resp.status_code}, expected {expect}")
            return None
        stats.ok += 1
        return resp

    def round(self) -> None:
        rng, call = self.rng, self.call
        call("GET /health", "GET", "/health")
        page = call("GET /products", "GET", "/products", params={"limit": 500})
        call("GET /products", "GET", "/products", params={"offset": 100, "limit": 50})
        products: list[dict[str, Any]] = page.json()["items"] if page else []
        ids = [p["id"] for p in products] or list(range(1, 101))
        for pid in rng.sample(ids, 3):
            call("GET /products/{product_id}", "GET", f"/products/{pid}")
            call(
                "GET /products/{product_id}/recommendations", "GET",
                f"/products/{pid}/recommendations", params={"k": 5},
            )
            call(
                "GET /products/{product_id}/render", "GET", f"/products/{pid}/render",
                params={"lang": rng.choice(("en", "de", "sv")), "utm_source": "newsletter"},
            )
            zone = rng.choice(ZONES)
            call(
                "GET /products/{product_id}/shipping", "GET", f"/products/{pid}/shipping",
                params={"zone": zone},
            )
            call(
                "GET /internal/rates/{zone}", "GET", f"/internal/rates/{zone}",
                params={"weight_grams": rng.randint(100, 5000)},
            )
        call("GET /internal/cache-stats", "GET", "/internal/cache-stats")
        call("GET /orders/recent", "GET", "/orders/recent", params={"limit": 20})
        call("GET /orders/recent", "GET", "/orders/recent", params={"limit": 50})

        in_stock = [p for p in products if p["inventory"]["stock"] >= 3]
        if in_stock:
            lines = [{"product_id": p["id"], "quantity": 1} for p in rng.sample(in_stock, 2)]
            call(
                "POST /orders", "POST", "/orders", expect=201,
                json={"customer_id": rng.randint(1, 200), "items": lines},
            )
        email, password = rng.choice(sorted(ACCOUNTS.items()))
        call("POST /login", "POST", "/login", json={"email": email, "password": password})
        call(
            "POST /login", "POST", "/login", expect=401,
            json={"email": email, "password": password + "!"},
        )
        self.reserve_burst(in_stock)
        call("GET /export/orders.csv", "GET", "/export/orders.csv")

    def reserve_burst(self, in_stock: list[dict[str, Any]]) -> None:
        """Concurrent single-unit reservations of the best-stocked product."""
        if not in_stock:
            return
        best = max(in_stock, key=lambda p: p["inventory"]["stock"])
        burst = min(RESERVE_BURST, best["inventory"]["stock"] - 2)
        best["inventory"]["stock"] -= burst

        def one(_: int) -> None:
            self.call(
                "POST /inventory/{sku}/reserve", "POST", f"/inventory/{best['sku']}/reserve",
                json={"quantity": 1},
            )

        with ThreadPoolExecutor(RESERVE_BURST) as pool:
            list(pool.map(one, range(burst)))


def drive(
    base_url: str, rounds: int = 3, log: Callable[[str], None] | None = None, seed: int = 7
) -> dict[str, int]:
    """Run ``rounds`` rounds of traffic; returns successful requests per route.

    ``log`` receives one summary line per route. Raises DriveError if any request failed.
    """
    with httpx.Client(base_url=base_url, timeout=30.0, trust_env=False) as client:
        driver = Driver(client, seed)
        for _ in range(rounds):
            driver.round()
    if log is not None:
        for route, s in driver.stats.items():
            mean_ms = 1000 * s.seconds / max(1, s.ok + s.failed)
            status = "ok" if not s.failed else f"{s.failed} FAILED"
            log(f"{route:<42} {s.ok:>4} requests  mean {mean_ms:8.1f} ms  {status}")
    errors = [e for s in driver.stats.values() for e in s.errors]
    if errors:
        shown = "; ".join(errors[:5]) + ("" if len(errors) <= 5 else f" (+{len(errors) - 5})")
        raise DriveError(f"{len(errors)} request(s) failed: {shown}")
    return {route: s.ok for route, s in driver.stats.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        drive(args.base_url.rstrip("/"), args.rounds, log=print)
    except DriveError as exc:
        print(f"drive: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"drive: cannot reach {args.base_url}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from sidekick.core.addr import HostPort
from sidekick.core.admin import AdminServer


async def test_admin_serves_health_readiness_and_metrics() -> None:
    registry = CollectorRegistry()
    c = Counter("sidekick_test_events", "Events.", registry=registry)
    c.inc(3)
    state = {"ready": False}
    server = AdminServer(
        HostPort("127.0.0.1", 0),
        registry,
        ready=lambda: (state["ready"], "ready" if state["ready"] else "starting"),
        healthy=lambda: (True, "ok"),
    )
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            async with http.get(base + "/readyz") as r:
                assert r.status == 503
                assert "starting" in await r.text()
            state["ready"] = True
            async with http.get(base + "/readyz") as r:
                assert r.status == 200
            async with http.get(base + "/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain")
                assert "sidekick_test_events_total 3.0" in await r.text()
    finally:
        await server.aclose()


async def test_admin_health_fails_when_check_fails() -> None:
    server = AdminServer(
        HostPort("127.0.0.1", 0), CollectorRegistry(), healthy=lambda: (False, "task died")
    )
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{server.port}/healthz") as r,
        ):
            assert r.status == 503
            assert "task died" in await r.text()
    finally:
        await server.aclose()

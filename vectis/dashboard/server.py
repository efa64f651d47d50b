"""Run the dashboard daemon until SIGTERM: logs on stdout, a new admin token on stderr."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
import sys

from vectis.dashboard.settings import DashboardSettings

log = logging.getLogger("vectis.dashboard")

#: The collector's thresholds once the daemon runs: young collections every 50,000 objects,
#: not CPython's 700. At 700 they came so often on a busy dashboard that what a request, a
#: sync or a database batch holds for some milliseconds outlived two of them and reached the
#: oldest generation, which grew past its quarter every 2 s: on replicas at 100,000 workers,
#: full collections of 100 to 290 ms each, the interpreter held, were the tail of heartbeat
#: latency (README, bench_replicas.py). At 50,000 those objects die young, and a full
#: collection came once in 136 s.
GC_THRESHOLDS = (50_000, 10, 10)
#: ... and a young collection at least this often (s) once CPython's 700 objects wait: a quiet
#: dashboard would otherwise keep its garbage until 50,000 objects came, such as the transports
#: of closed connections (a refused request's bytes no longer wait for it: `httpserver._untrace`).
GC_YOUNG_EVERY = 0.1
GC_YOUNG_LEAST = 700


def run(settings: DashboardSettings) -> None:
    """Serve until told to stop; startup errors propagate as VectisError."""
    tls = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        from vectis.dashboard_tls import server_context

        tls = server_context(settings.tls_cert, settings.tls_key)  # exit 3 before anything
    os.umask(0o077)  # the database and its WAL files hold worker secrets
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Three threads share the interpreter (the API loop, the sync loop, the store): a shorter
    # switch interval than the default 5 ms keeps an API answer from waiting on a sweep.
    sys.setswitchinterval(0.001)
    asyncio.run(_serve(settings, tls))


async def _collect_young() -> None:
    """A young collection every GC_YOUNG_EVERY s when GC_YOUNG_LEAST objects wait for one."""
    while True:
        await asyncio.sleep(GC_YOUNG_EVERY)
        if gc.get_count()[0] >= GC_YOUNG_LEAST:
            gc.collect(0)


def _listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket first, so a taken port fails before anything is generated."""
    from vectis.errors import ConfigError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
            0
        ][0]
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port} ({why})") from None


async def _serve(settings: DashboardSettings, tls: ssl.SSLContext | None = None) -> None:
    from aiohttp import web

    from vectis import httpserver
    from vectis.dashboard.app import create_app
    from vectis.dashboard.keys import DASHBOARD

    sock = _listen(settings.host, settings.port)
    app = create_app(settings)
    httpserver.quiet_parser_errors()
    runner = httpserver.Runner(
        app,
        handle_signals=False,
        access_log=logging.getLogger("vectis.http"),
        access_log_class=httpserver.AccessLog,
        **httpserver.runner_options(),
    )
    young: asyncio.Task[None] | None = None
    try:
        await runner.setup()
        # Everything made so far (the store, the key ring, the nonce store and its heap, the
        # rows kept for heartbeats) lives as long as the daemon: out of the collector's full
        # passes, which walked a busy dashboard's millions of nonces in 100 ms stalls.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        young = asyncio.create_task(_collect_young(), name="vectis-gc")
        await web.SockSite(runner, sock, ssl_context=tls).start()
        dash = app[DASHBOARD]
        if dash.access.generated_admin_token:
            sys.stderr.write(
                "vectis dashboard: admin token (shown only now; stored hashed): "
                f"{dash.access.generated_admin_token}\n"
            )
            sys.stderr.flush()
        log.info(
            "dashboard listening on %s://%s:%d (data %s, DNS %s, zone %s)",
            "https" if tls is not None else "http",
            settings.host,
            sock.getsockname()[1],
            settings.data_dir,
            settings.dns_backend,
            settings.zone,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        if young is not None:
            young.cancel()
        await runner.cleanup()
        sock.close()
    log.info("stopped")

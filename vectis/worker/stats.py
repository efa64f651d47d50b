"""System figures for `/sync`: a cached, non-blocking psutil sampler and fixed metadata.

CPU percent comes from `cpu_percent(interval=None)`, the change since the previous call,
so a collection never sleeps; figures are cached for `ttl` seconds so a busy `/sync`
does not pay psutil on every request.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from vectis import __version__

DEFAULT_TTL = 1.0


def _os_name() -> str:
    try:
        release = platform.freedesktop_os_release()
        return release.get("PRETTY_NAME") or release.get("NAME") or platform.system()
    except OSError:
        return f"{platform.system()} {platform.release()}".strip()


def collect_metadata() -> dict[str, Any]:
    """Facts that do not change while the daemon runs (computed once)."""
    return {
        "hostname": socket.gethostname(),
        "os": _os_name(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "vectis": __version__,
        "boot_time": int(psutil.boot_time()),
    }


def _disk(mount: str) -> dict[str, Any]:
    try:
        du = psutil.disk_usage(mount)
    except OSError as exc:
        return {"mount": mount, "error": exc.strerror or str(exc)}
    return {
        "mount": mount,
        "total": du.total,
        "used": du.used,
        "free": du.free,
        "percent": du.percent,
    }


def collect_stats(mounts: Sequence[str], boot_time: float, now: float) -> dict[str, Any]:
    """One collection of the changing figures; never blocks (a few hundred microseconds)."""
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    net = psutil.net_io_counters()
    load = os.getloadavg()
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_count": psutil.cpu_count(),
        "load_average": [round(x, 2) for x in load],
        "memory": {
            "total": vm.total,
            "available": vm.available,
            "used": vm.used,
            "percent": vm.percent,
        },
        "swap": {"total": sw.total, "used": sw.used, "percent": sw.percent},
        "disks": [_disk(m) for m in mounts],
        "network": {
            "bytes_sent": net.bytes_sent,
            "bytes_recv": net.bytes_recv,
            "packets_sent": net.packets_sent,
            "packets_recv": net.packets_recv,
        },
        "uptime": int(now - boot_time),
        "boot_time": int(boot_time),
        "process_count": len(psutil.pids()),
    }


class StatsSampler:
    """Caches one collection for `ttl` seconds; serves the figures as dicts and as JSON text."""

    def __init__(
        self,
        mounts: Sequence[str] = ("/",),
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mounts = tuple(mounts)
        self.ttl = ttl
        self.clock = clock
        self.monotonic = monotonic
        self.metadata = collect_metadata()
        self.boot_time = float(self.metadata["boot_time"])
        self._stamp = float("-inf")
        self._stats: dict[str, Any] = {}
        self._json = ""
        # The first cpu_percent(None) call only sets the baseline; prime it now.
        psutil.cpu_percent(interval=None)

    def refresh(self) -> None:
        """Collect now, whatever the cache holds."""
        now = self.clock()
        stats = collect_stats(self.mounts, self.boot_time, now)
        meta = {**self.metadata, "uptime": stats["uptime"]}
        self._stats = stats
        sep = (",", ":")
        self._json = f'"stats":{json.dumps(stats, separators=sep)},' + (
            f'"metadata":{json.dumps(meta, separators=sep)}'
        )
        self._stamp = self.monotonic()

    def _fresh(self) -> None:
        if self.monotonic() - self._stamp >= self.ttl:
            self.refresh()

    def stats(self) -> dict[str, Any]:
        """The cached figures (collected again when older than `ttl`)."""
        self._fresh()
        return self._stats

    def json_fragment(self) -> str:
        """`"stats":{...},"metadata":{...}` as JSON text, for splicing into an answer."""
        self._fresh()
        return self._json

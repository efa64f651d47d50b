"""The cached stats sampler: figures present and sane, cached for its ttl, cheap to collect."""

from __future__ import annotations

import json
import time

from vectis import __version__
from vectis.worker.stats import StatsSampler, collect_stats


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_figures_are_complete_and_sane() -> None:
    sampler = StatsSampler(["/", "/no/such/mount"])
    stats = sampler.stats()
    assert 0.0 <= stats["cpu_percent"] <= 100.0
    assert len(stats["load_average"]) == 3
    assert stats["memory"]["total"] >= stats["memory"]["available"] > 0
    assert stats["swap"]["total"] >= 0
    root, missing = stats["disks"]
    assert root["mount"] == "/" and root["total"] >= root["used"] > 0
    assert missing["mount"] == "/no/such/mount" and missing["error"]
    assert stats["network"]["bytes_recv"] >= 0 and stats["process_count"] > 0
    assert stats["uptime"] > 0 and stats["boot_time"] < time.time()
    meta = sampler.metadata
    assert meta["vectis"] == __version__
    assert all(meta[k] for k in ("hostname", "os", "kernel", "arch", "python"))


def test_json_fragment_splices_into_an_object() -> None:
    sampler = StatsSampler()
    doc = json.loads("{" + sampler.json_fragment() + "}")
    assert doc["stats"]["memory"]["total"] > 0
    assert doc["metadata"]["uptime"] == doc["stats"]["uptime"]


def test_cached_for_ttl_then_collected_again() -> None:
    ticks = Ticks()
    sampler = StatsSampler(ttl=1.0, monotonic=ticks)
    first = sampler.stats()
    ticks.now += 0.5
    assert sampler.stats() is first
    ticks.now += 0.6
    assert sampler.stats() is not first


def test_one_collection_costs_under_a_millisecond_of_cpu() -> None:
    sampler = StatsSampler()
    runs = 200
    started = time.process_time()
    for _ in range(runs):
        collect_stats(sampler.mounts, sampler.boot_time, time.time())
    per_call = (time.process_time() - started) / runs
    assert per_call < 0.001, f"{per_call * 1e6:.0f} us of CPU per collection"

"""Config groups and the merge that makes a worker's desired config. Pure: no I/O.

A worker's desired config is the merge, key by key at the top level, of the config of every
group whose selector selects its labels, and over them the worker's own config (set with
`PUT /infra/workers/<id>/config`). On a key two groups both set, the higher priority wins; on
equal priorities, the group whose name sorts first (byte order). The worker's own config wins
over every group. The desired revision moves only when the merged config really changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from vectis import contract
from vectis.contract import CONFIG_LIMIT
from vectis.dashboard.model import Changes, Worker, after_config
from vectis.dashboard.selectors import Selector, parse
from vectis.errors import BadRequest, Conflict
from vectis.status import iso

#: What `config_sources` names the worker's own config by; a group is `group:<name>`.
WORKER_SOURCE = "worker"


@dataclass(frozen=True, slots=True)
class ConfigGroup:
    """A named config for the workers its selector selects."""

    name: str
    selector: str
    priority: int
    config_json: str
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class _Compiled:
    name: str
    selector: Selector
    config: dict[str, Any]


class Groups:
    """Every group parsed once, in merge order (lowest precedence first)."""

    def __init__(self, groups: Iterable[ConfigGroup]) -> None:
        by_name = sorted(groups, key=lambda g: g.name, reverse=True)
        ordered = sorted(by_name, key=lambda g: g.priority)  # stable: names stay descending
        # Workers with the same labels and own config (most of a group) merge to the same
        # text: each distinct pair is merged once per change.
        self._merged: dict[tuple[str, str], str] = {}
        self._groups = [
            _Compiled(g.name, parse(g.selector), json.loads(g.config_json)) for g in ordered
        ]

    def merge(
        self, labels: Mapping[str, str], own: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """(the merged config, each key's source: `group:<name>` or `worker`)."""
        merged: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for g in self._groups:
            if g.config and g.selector.matches(labels):
                merged.update(g.config)
                sources.update(dict.fromkeys(g.config, f"group:{g.name}"))
        merged.update(own)
        sources.update(dict.fromkeys(own, WORKER_SOURCE))
        return merged, sources

    def desired(self, w: Worker) -> str:
        """`w`'s merged config as stored JSON text."""
        key = (w.labels_json, w.own_config_json)
        text = self._merged.get(key)
        if text is None:
            merged, _ = self.merge(json.loads(w.labels_json), json.loads(w.own_config_json))
            text = json.dumps(merged, separators=(",", ":"), ensure_ascii=False)
            if len(text.encode("utf-8")) > CONFIG_LIMIT:
                raise BadRequest(
                    f"the merged config of worker {w.id} would be larger than "
                    f"{CONFIG_LIMIT // 1024} KiB"
                )
            self._merged[key] = text
        return text


@lru_cache(maxsize=1024)
def _canonical(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True)


def _same(a: str, b: str) -> bool:
    """Whether two stored configs are the same JSON (key order aside; 1, 1.0 and true differ)."""
    return a == b or _canonical(a) == _canonical(b)


def reconfigured(
    w: Worker, groups: Groups, now: datetime, reason: str | None
) -> tuple[Worker, Changes] | None:
    """`w` with its merged config when that changed (a new revision, `outdated`), else None."""
    text = groups.desired(w)
    if _same(text, w.config_json):
        return None
    return after_config(w, now, text, reason)


def first_config(w: Worker, groups: Groups) -> Worker:
    """A new worker with the config its groups give it (revision 1 if any); still `pending`."""
    text = groups.desired(w)
    if _same(text, "{}"):
        return w
    return replace(w, config_json=text, desired_revision=1)


def plan(
    workers: Sequence[Worker], groups: Groups, now: datetime, reason: str
) -> list[tuple[Worker, Changes]]:
    """The workers among `workers` whose merged config changes, each with its transition."""
    out: list[tuple[Worker, Changes]] = []
    for w in workers:
        found = reconfigured(w, groups, now, reason)
        if found is not None:
            out.append(found)
    return out


def with_settings(
    w: Worker,
    groups: Groups,
    now: datetime,
    labels: Mapping[str, str] | None,
    own_config_json: str | None,
) -> tuple[Worker, Changes]:
    """`w` with new labels and/or own config, merged again (a new revision only when its
    merged config changed), and its transitions."""
    reason: str | None = None  # the worker's own config: the cause says no more
    if labels is not None:
        w = replace(w, labels_json=labels_json(labels), updated_at=iso(now))
        reason = "labels changed"
    if own_config_json is not None:
        w = replace(w, own_config_json=own_config_json, updated_at=iso(now))
        reason = None
    return reconfigured(w, groups, now, reason) or (w, [])


def check_room(count: int) -> None:
    """Refuse a new group when `count` groups exist already (the limit read at call time)."""
    if count >= contract.GROUPS_MAX:
        raise Conflict(f"at most {contract.GROUPS_MAX} config groups")


def group_put(
    old: ConfigGroup | None,
    name: str,
    selector: str,
    priority: int,
    config_json: str,
    now: datetime,
) -> tuple[ConfigGroup, list[Selector]]:
    """The group a `PUT` stores over `old` (None: a new one), and the selectors whose workers
    merge again: the new one and the old one."""
    group = ConfigGroup(
        name, selector, priority, config_json, old.created_at if old else iso(now), iso(now)
    )
    return group, [parse(selector)] + ([parse(old.selector)] if old else [])


def labels_json(labels: Mapping[str, str]) -> str:
    """Labels as stored: compact JSON, keys sorted."""
    return json.dumps(dict(labels), separators=(",", ":"), ensure_ascii=False, sort_keys=True)

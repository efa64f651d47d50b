"""Label selectors and the config merge: pure functions, no I/O."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from vectis import contract
from vectis.dashboard.groups import ConfigGroup, Groups, first_config, reconfigured
from vectis.dashboard.model import new_worker
from vectis.dashboard.selectors import ABSENT, EQ, EXISTS, NE, Requirement, SelectorError, parse
from vectis.errors import BadRequest

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "requirements"),
    [
        ("", ()),
        ("  ", ()),
        ("role=edge", (Requirement("role", EQ, "edge"),)),
        ("role==edge", (Requirement("role", EQ, "edge"),)),
        (" role = edge , region != us ", (Requirement("role", EQ, "edge"),
                                          Requirement("region", NE, "us"))),
        ("gpu,!spot", (Requirement("gpu", EXISTS), Requirement("spot", ABSENT))),
        ("example.com/tier=", (Requirement("example.com/tier", EQ, ""),)),
    ],
)  # fmt: skip
def test_parse(text: str, requirements: tuple[Requirement, ...]) -> None:
    assert parse(text).requirements == requirements


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("role===edge", "operators"),
        ("=edge", "needs a label key"),
        ("role=bad value", "value"),
        ("a,,b", "empty requirement"),
        ("a,", "empty requirement"),
        ("-role=x", "label key"),
        ("!", "needs a label key"),
        ("role=" + "x" * 64, "value"),
        ("r\x1bole=x", "label key"),
        ("x" * (contract.SELECTOR_MAX + 1), "at most"),
    ],
)
def test_a_selector_that_does_not_parse_says_why(text: str, why: str) -> None:
    with pytest.raises(SelectorError, match=why) as caught:
        parse(text)
    assert "\x1b" not in str(caught.value)  # named escaped, never raw


def test_matching_follows_kubernetes() -> None:
    labels = {"role": "edge", "region": "eu"}
    assert parse("role=edge,region=eu").matches(labels)
    assert not parse("role=edge,region=us").matches(labels)
    assert parse("region!=us").matches(labels) and parse("region!=us").matches({})
    assert not parse("region!=eu").matches(labels)
    assert parse("role").matches(labels) and not parse("role").matches({})
    assert parse("!gpu").matches(labels) and not parse("!role").matches(labels)
    assert parse("").matches({})
    assert parse(" role == edge ").text() == "role=edge"


def test_sql_has_one_parameter_per_value() -> None:
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return "?"

    sql = parse("role=edge,!gpu").sql(arg)
    assert args == ["role", "edge", "gpu"]
    assert sql.count("?") == 3 and "edge" not in sql
    assert parse("").sql(arg) == "1 = 1"


def group(name: str, selector: str, priority: int, config: dict[str, object]) -> ConfigGroup:
    return ConfigGroup(name, selector, priority, json.dumps(config), "t", "t")


def test_merge_priority_then_name_then_the_worker() -> None:
    groups = Groups(
        [
            group("low", "", -5, {"a": "low", "b": "low", "c": "low"}),
            group("zeta", "role=edge", 3, {"a": "zeta", "b": "zeta"}),
            group("alpha", "role=edge", 3, {"a": "alpha"}),
            group("other", "role=core", 100, {"a": "other"}),
        ]
    )
    merged, sources = groups.merge({"role": "edge"}, {"c": "own"})
    assert merged == {"a": "alpha", "b": "zeta", "c": "own"}
    assert sources == {"a": "group:alpha", "b": "group:zeta", "c": "worker"}
    merged, _ = groups.merge({}, {})
    assert merged == {"a": "low", "b": "low", "c": "low"}


def test_a_revision_moves_only_when_the_merge_changes() -> None:
    w = new_worker("w-one-0001", "z.test", "10.0.0.1", 3000, "ab" * 32, None, None, NOW,
                   labels_json='{"role":"edge"}')  # fmt: skip
    groups = Groups([group("edge", "role=edge", 0, {"x": 1, "y": 2})])
    w = first_config(w, groups)
    assert (w.desired_revision, json.loads(w.config_json), w.status) == (
        1, {"x": 1, "y": 2}, "pending"
    )  # fmt: skip
    assert reconfigured(w, groups, NOW, "same") is None
    # The same keys in another order are the same config; 1 and 1.0 and true are not.
    reordered = replace(w, config_json='{"y":2,"x":1}')
    assert reconfigured(reordered, groups, NOW, "same") is None
    synced = replace(w, status="synced")
    changed = reconfigured(
        synced, Groups([group("edge", "role=edge", 0, {"x": True, "y": 2})]), NOW, "g"
    )
    assert changed is not None and changed[0].desired_revision == 2
    assert changed[0].status == "outdated"
    assert changed[1][0].cause == "config revision 2 set (g)"
    # A worker no group selects has its own config only; none at all: no revision.
    bare = first_config(replace(w, labels_json="{}", config_json="{}", desired_revision=0), groups)
    assert bare.desired_revision == 0


def test_a_merge_over_the_size_cap_is_refused() -> None:
    w = new_worker("w-one-0001", "z.test", "10.0.0.1", 3000, "ab" * 32, None, None, NOW)
    big = "x" * (contract.CONFIG_LIMIT // 2)
    groups = Groups([group("a", "", 0, {"a": big}), group("b", "", 0, {"b": big})])
    with pytest.raises(BadRequest, match="larger than"):
        reconfigured(w, groups, NOW, None)

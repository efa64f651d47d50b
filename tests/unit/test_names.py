"""Worker IDs: readable, DNS-label safe, matching the pattern of docs/protocol.md#registration."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from vectis.dashboard.names import ADJECTIVES, NOUNS, is_worker_id, new_worker_id

ID_PATTERN = re.compile(r"^[a-z]+(-[a-z]+)*-[0-9a-f]{4}$")


def test_word_lists_are_dns_safe_and_distinct() -> None:
    for word in (*ADJECTIVES, *NOUNS):
        assert re.fullmatch(r"[a-z]+", word), word
    assert len(set(ADJECTIVES)) == len(ADJECTIVES) and len(set(NOUNS)) == len(NOUNS)


@given(st.data())
def test_every_id_matches_the_spec(data: st.DataObject) -> None:
    worker_id = new_worker_id(lambda n: data.draw(st.integers(0, n - 1)))
    assert ID_PATTERN.fullmatch(worker_id) and is_worker_id(worker_id) and len(worker_id) <= 63


def test_ids_vary() -> None:
    assert len({new_worker_id() for _ in range(200)}) > 190


def test_is_worker_id_refuses_other_shapes() -> None:
    bad_ids = ["", "Brave-otter-3f2a", "brave-otter-3F2A", "brave--otter-3f2a", "3f2a"]
    bad_ids += ["brave-otter-3f2", "brave-otter-3f2a-", "a" * 60 + "-3f2a", "bräve-otter-3f2a"]
    for bad in bad_ids:
        assert not is_worker_id(bad), bad

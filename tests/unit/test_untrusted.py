"""The checks every text from outside passes at the edge (vectis/untrusted.py)."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vectis.crypto.signing import NonceShareFull, NonceStore
from vectis.dashboard.budgets import CallBudget
from vectis.untrusted import parse_object, readable, readable_json, readable_tree, shown


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"version": "\\ud800"}', "lone surrogate .* in 'version'"),
        (b'{"a": {"b": ["ok", "\\udfff"]}}', r"in 'a\.b\[1\]'"),
        (b'{"\\ud800": 1}', "in a key under 'the top level'"),
        (b"\xff", "not UTF-8"),
        (b"[1]", "must be a JSON object"),
        (b"{", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b"   ", "empty"),
        (b'{"a":' * 100_000, "nested too deeply|not valid JSON"),
    ],
)
def test_parse_object_refuses(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_object(raw)


def test_parse_object_keeps_paired_surrogates_and_escapes() -> None:
    doc = parse_object(b'{"e": "\\ud83d\\ude00", "t": "a\\tb"}')
    assert doc == {"e": "\U0001f600", "t": "a\tb"}


@pytest.mark.parametrize(
    "text",
    [
        "\x1b]0;owned\x07",
        "\x1b[2J",
        "a\x00b",
        "\x9b31m",
        "\u202eevil",
        "x\u2028y",
        "\ud800",
        "\x7f",
    ],
)
def test_readable_refuses_what_a_terminal_would_act_on(text: str) -> None:
    with pytest.raises(ValueError, match="'hostname' holds a control character"):
        readable(text, "hostname", 255)


def test_readable_bounds_and_types() -> None:
    assert readable("web-1.example.com", "hostname", 255) == "web-1.example.com"
    assert readable("héllo ✓", "hostname", 255) == "héllo ✓"
    with pytest.raises(ValueError, match="at most 4 characters"):
        readable("12345", "v", 4)
    with pytest.raises(ValueError, match="must be a string"):
        readable(5, "v", 4)


def test_readable_tree_bounds_size_depth_and_text() -> None:
    assert readable_tree({"cpu": 1.5, "disks": [{"m": "/"}]}, "stats", 100) == (
        '{"cpu":1.5,"disks":[{"m":"/"}]}'
    )
    with pytest.raises(ValueError, match="larger than 100 bytes"):
        readable_tree({"x": "y" * 100}, "stats", 100)
    with pytest.raises(ValueError, match=r"'stats\.d\[0\]\.m' holds a control"):
        readable_tree({"d": [{"m": "\x1b]8;;http://e\x1b\\"}]}, "stats", 1000)
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    with pytest.raises(ValueError, match="nested more than"):
        readable_tree(deep, "stats", 10_000)


def test_shown_escapes_and_cuts() -> None:
    assert shown("a\x1b[2Jb\ud800") == "a\\x1b[2Jb\\ud800"
    assert shown("x" * 300, 10) == "xxxxxxx..."


# What must never reach a person's screen raw, from the Unicode database rather than from the
# code under test: controls (C0, DEL, C1), surrogates, line and paragraph separators, the
# left-to-right and right-to-left marks, and the explicit bidirectional embeddings,
# overrides and isolates.
_BIDI_CONTROLS = {"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"}


def _unsafe(c: str) -> bool:
    return (
        unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")
        or c in "\u200e\u200f"
        or unicodedata.bidirectional(c) in _BIDI_CONTROLS
    )


# The edges of each unsafe range and their safe neighbours, drawn often.
_TRICKY = st.sampled_from(
    [
        *"\x00\x1f\x7f\x85\x9f\u2028\u2029\u200e\u200f\ud800\udfff",
        *map(chr, range(0x202A, 0x202F)),
        *map(chr, range(0x2066, 0x206A)),
        *" ~\xa0\u200d\u2027\u202f\u2065\u206a\ue000",
    ]
)


@given(
    # A list of characters, not st.text: text() merges its alphabets and the edges drown.
    st.lists(
        st.characters(exclude_categories=()) | _TRICKY | st.sampled_from("ab\\é"), max_size=50
    ).map("".join),
    st.integers(0, 60),
)
def test_any_text_is_either_readable_or_refused_and_shown_is_always_safe(
    text: str, limit: int
) -> None:
    # Readable is exactly a text within the limit and free of unsafe characters, unchanged.
    if len(text) <= limit and not any(_unsafe(c) for c in text):
        assert readable(text, "f", limit) == text
    else:
        with pytest.raises(ValueError, match=r"^'f' "):
            readable(text, "f", limit)
    # Shown is always safe to store and print, and leaves a safe text as it is.
    safe = shown(text, 10_000)
    safe.encode("utf-8")
    assert not any(_unsafe(c) for c in safe)
    if not any(_unsafe(c) for c in text):
        assert safe == text
    else:
        assert safe != text and all(c in safe or _unsafe(c) for c in text)


def test_call_budget_refuses_one_worker_and_serves_another() -> None:
    budget = CallBudget(10)
    assert all(budget.take("a", 0.0) == 0 for _ in range(10))
    assert budget.take("a", 0.0) == 6  # one call back every 6 s
    assert budget.take("b", 0.0) == 0
    assert budget.take("a", 6.0) == 0
    budget.forget("a")
    assert budget.take("a", 6.0) == 0
    # A call given back (a replay found after the budget was taken) is there again, and a
    # bucket never holds more than a minute's worth.
    assert all(budget.take("c", 0.0) == 0 for _ in range(10))
    budget.give_back("c")
    assert budget.take("c", 0.0) == 0
    assert budget.take("c", 0.0) == 6
    assert budget.take("d", 0.0) == 0
    budget.give_back("d")
    budget.give_back("d")
    assert all(budget.take("d", 0.0) == 0 for _ in range(10))
    assert budget.take("d", 0.0) == 6


def test_nonce_share_refuses_one_owner_only_and_frees_on_expiry() -> None:
    store = NonceStore(capacity=100, share=3)
    for i in range(3):
        store.remember(f"a{i}", 10, 0, "a")
    with pytest.raises(NonceShareFull):
        store.remember("a3", 10, 0, "a")
    store.remember("b0", 10, 0, "b")
    store.remember("a0", 20, 1, "a")  # remembered again: not a new slot
    assert store.held("a") == 3 and store.held("b") == 1
    store.remember("a3", 30, 10, "a")  # a1, a2 and b0 expired at 10
    assert store.held("a") == 2 and store.held("b") == 0


_TREE_TEXT = st.sampled_from(
    ["\n", "\\n", "\\\n", "\x1b[2J", "\u202e", "\x9b", "\x7f", "é", "\\u0007", "ok", "\u2066"]
) | st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8)
_TREE = st.recursive(
    st.none() | st.integers() | _TREE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TREE_TEXT, inner, max_size=3),
    max_leaves=12,
)


@given(
    st.dictionaries(_TREE_TEXT, _TREE, max_size=4), st.sampled_from(["ascii", "utf8", "msgspec"])
)
def test_the_byte_search_on_json_text_agrees_with_the_check_on_the_parsed_object(
    tree: dict[str, object], how: str
) -> None:
    import msgspec

    if how == "msgspec":
        raw = msgspec.json.encode(tree)
    else:
        raw = json.dumps(tree, ensure_ascii=how == "ascii").encode("utf-8")
    try:
        readable_tree(tree, "stats", 1 << 20)
        expected: str | None = None
    except ValueError as exc:
        expected = str(exc)
    try:
        readable_json(raw, "stats", 1 << 20)
        got: str | None = None
    except ValueError as exc:
        got = str(exc)
    assert got == expected, raw

"""Checks for what comes from outside (request bodies, workers' answers, files): one set of rules.

A text from outside is used only once it is valid Unicode that can be encoded (JSON's `\\ud800`
escape decodes to a lone surrogate, which no UTF-8 database or terminal accepts), free of
control characters where a person reads it, and bounded in length. Each check raises
ValueError with a message that names the field and never echoes the bad text raw.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Lone surrogates can never be encoded: refused in every text from outside.
_SURROGATE = re.compile("[\ud800-\udfff]")
# What must not reach a person's screen raw: C0 and C1 controls, DEL, the line and paragraph
# separators, and the bidirectional overrides that make text read other than it is.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
#: How deep a JSON document from outside may nest.
MAX_DEPTH = 32


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_object(raw: bytes, what: str = "the body") -> dict[str, Any]:
    """A JSON object whose every string (keys too) can be encoded; ValueError says why not."""
    if not raw.strip():
        raise ValueError(f"{what} is empty; send a JSON object")
    try:
        doc = json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON ({exc.msg} at position {exc.pos})") from None
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{what} must be a JSON object")
    # Raw UTF-8 cannot carry a surrogate (the decoder refuses it): only a \u escape can.
    if b"\\u" in raw:
        where = _surrogate_path(doc, "")
        if where is not None:
            raise ValueError(f"{what} holds a lone surrogate (an unpaired \\ud800-\\udfff) {where}")
    return doc


def _surrogate_path(value: Any, path: str) -> str | None:
    """Where in `value` a lone surrogate stands ("in 'a.b'"), else None."""
    if isinstance(value, str):
        return f"in {path or 'a value'!r}" if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if _SURROGATE.search(key):
                return f"in a key under {path or 'the top level'!r}"
            found = _surrogate_path(item, sub)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _surrogate_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def readable(value: Any, field: str, limit: int) -> str:
    """A text a person will read: a string of at most `limit` characters, no control characters."""
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"'{field}' must be a string of at most {limit} characters")
    if _UNSAFE.search(value):
        raise ValueError(f"'{field}' holds a control character or an unpaired surrogate")
    return value


def readable_tree(value: dict[str, Any], field: str, limit: int) -> str:
    """A JSON object that people will read (stats, metadata), as compact JSON of <= `limit` bytes.

    Every key and string must be readable; nesting is bounded.
    """
    problem = _tree_problem(value, field, 0)
    if problem is not None:
        raise ValueError(problem)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8")) > limit:
        raise ValueError(f"'{field}' is larger than {limit} bytes")
    return text


# In valid JSON text a control character can only stand as an escape. These are the escapes of
# what `_UNSAFE` refuses (each after an even run of backslashes, so never an escaped backslash
# followed by a letter), and the raw UTF-8 forms of those that may stand unescaped.
_UNSAFE_IN_JSON = re.compile(
    rb"(?<!\\)(?:\\\\)*\\(?:[bfnrt]|u(?:00[01][0-9a-fA-F]|007[fF]|00[89][0-9a-fA-F]"
    rb"|20(?:2[89a-eA-E]|0[eEfF]|6[6-9])))"
    rb"|\x7f|\xc2[\x80-\x9f]|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]"
)


# Every match of _UNSAFE_IN_JSON holds one of these bytes; most answers hold none of them.
_SUSPECT = re.compile(rb"[\\\x7f\xc2\xe2]")


def readable_json(raw: bytes, field: str, limit: int) -> str:
    """A JSON object's text from outside, checked as `readable_tree` checks the parsed object.

    `raw` must be valid JSON without lone surrogates (a decoder checked it). The text is
    searched as bytes, and parsed only when it may be nested too deep or when it must say
    where the bad text stands: a sweep checks thousands of answers a second.
    """
    if len(raw) > limit:
        raise ValueError(f"'{field}' is larger than {limit} bytes")
    suspect = _SUSPECT.search(raw) is not None and _UNSAFE_IN_JSON.search(raw) is not None
    if suspect or raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
        problem = _tree_problem(json.loads(raw), field, 0)
        if problem is not None:
            raise ValueError(problem)
    return raw.decode("utf-8")


def _tree_problem(value: Any, path: str, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return f"'{path}' is nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, str):
        return f"'{path}' holds a control character" if _UNSAFE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _UNSAFE.search(key):
                return f"a key in '{path}' holds a control character"
            found = _tree_problem(item, f"{path}.{key}", depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _tree_problem(item, f"{path}[{index}]", depth + 1)
            if found is not None:
                return found
    return None


def shown(text: str, limit: int = 200) -> str:
    """`text` safe to store and show: unsafe characters escaped, cut to `limit` characters."""
    safe = _UNSAFE.sub(lambda m: ascii(m.group())[1:-1], text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."

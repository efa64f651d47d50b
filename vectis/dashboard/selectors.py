"""Label selectors, Kubernetes' equality-based syntax: parsed once, matched in Python or in SQL.

`role=edge,region!=us`: requirements joined by commas, all of which must hold.

| requirement | holds when |
| --- | --- |
| `key=value`, `key==value` | the worker has the label with that value |
| `key!=value` | the worker has not the label, or has it with another value |
| `key` | the worker has the label, whatever its value |
| `!key` | the worker has not the label |

The empty selector selects every worker. Keys and values follow the label rules of
`vectis.contract`. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from vectis import contract

EQ, NE, EXISTS, ABSENT = "=", "!=", "exists", "absent"


class SelectorError(ValueError):
    """A selector that does not parse; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # EQ, NE, EXISTS or ABSENT
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == EQ:
            return labels.get(self.key) == self.value
        if self.op == NE:
            return labels.get(self.key) != self.value
        if self.op == EXISTS:
            return self.key in labels
        return self.key not in labels

    def text(self) -> str:
        if self.op == EXISTS:
            return self.key
        if self.op == ABSENT:
            return f"!{self.key}"
        return f"{self.key}{self.op}{self.value}"


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def text(self) -> str:
        """The canonical form: `==` as `=`, no spaces."""
        return ",".join(r.text() for r in self.requirements)

    def sql(self, arg: Callable[[object], str], id_column: str = "id") -> str:
        """A WHERE condition over the workers table, with the labels in `worker_labels`;
        `arg` adds a parameter and returns its placeholder. "TRUE" for the empty selector."""
        parts: list[str] = []
        for r in self.requirements:
            found = f"SELECT worker_id FROM worker_labels WHERE key = {arg(r.key)}"  # noqa: S608
            if r.op in (EQ, NE):
                found += f" AND value = {arg(r.value)}"
            negate = "NOT " if r.op in (NE, ABSENT) else ""
            parts.append(f"{id_column} {negate}IN ({found})")
        return " AND ".join(parts) if parts else "1 = 1"


EVERYTHING = Selector()


def _key(text: str, requirement: str) -> str:
    key = text.strip()
    if not key:
        raise SelectorError(f"{requirement[:80]!r}: a requirement needs a label key")
    problem = contract.label_key_problem(key)
    if problem:
        raise SelectorError(problem)
    return key


def parse(text: str) -> Selector:
    """`text` as a Selector; SelectorError says which requirement is wrong and why."""
    if len(text) > contract.SELECTOR_MAX:
        raise SelectorError(f"a selector is at most {contract.SELECTOR_MAX} characters")
    if not text.strip():
        return EVERYTHING
    found: list[Requirement] = []
    for part in text.split(","):
        item = part.strip()
        if not item:
            raise SelectorError("an empty requirement (two commas, or a comma at an end)")
        if "!=" in item:
            key, _, value = item.partition("!=")
            op = NE
        elif "==" in item:
            key, _, value = item.partition("==")
            op = EQ
        elif "=" in item:
            key, _, value = item.partition("=")
            op = EQ
        elif item.startswith("!"):
            found.append(Requirement(_key(item[1:], item), ABSENT))
            continue
        else:
            found.append(Requirement(_key(item, item), EXISTS))
            continue
        key = _key(key, item)
        value = value.strip()
        if value.startswith("="):
            raise SelectorError(f"{item[:80]!r}: the operators are =, == and !=")
        problem = contract.label_value_problem(key, value)
        if problem:
            raise SelectorError(problem)
        found.append(Requirement(key, op, value))
    return Selector(tuple(found))

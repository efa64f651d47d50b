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

from collections.abc import Callable, Collection, Mapping
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

    def positive(self) -> tuple[Requirement, ...]:
        """The requirements that only a worker carrying some label can meet."""
        return tuple(r for r in self.requirements if r.op in (EQ, EXISTS))

    def sql(
        self, arg: Callable[[object], str], indexed: Collection[Requirement] | None = None
    ) -> str:
        """A WHERE condition over the workers table, with the labels in `worker_labels`;
        `arg` adds a parameter and returns its placeholder; "1 = 1" for the empty selector.

        A requirement in `indexed` (all of them by default) is a set of worker ids
        (`id IN (...)`) that a database reads from the labels' index: the plan for one that
        selects few workers. The others test each worker row by row (`EXISTS`): the plan for
        a page of workers most of which qualify, read in list order up to the page's end.
        """
        parts: list[str] = []
        for r in self.requirements:
            by_index = indexed is None or r in indexed
            if by_index:
                found = "SELECT worker_id FROM worker_labels WHERE "
            else:
                found = "SELECT 1 FROM worker_labels WHERE worker_id = workers.id AND "
            found += f"key = {arg(r.key)}"
            if r.op in (EQ, NE):
                found += f" AND value = {arg(r.value)}"
            negate = "NOT " if r.op in (NE, ABSENT) else ""
            parts.append(f"id {negate}IN ({found})" if by_index else f"{negate}EXISTS ({found})")
        return " AND ".join(parts) if parts else "1 = 1"


EVERYTHING = Selector()


def count_sql(r: Requirement, arg: Callable[[object], str], cap: int) -> str:
    """How many workers meet the positive requirement `r`, counted in the labels' index up
    to `cap` (enough to choose a plan, and cheap whatever the fleet's size)."""
    sql = f"SELECT 1 FROM worker_labels WHERE key = {arg(r.key)}"  # noqa: S608
    if r.op == EQ:
        sql += f" AND value = {arg(r.value)}"
    return f"SELECT COUNT(*) FROM ({sql} LIMIT {arg(cap)})"  # noqa: S608


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

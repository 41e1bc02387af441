"""The engine's book of base changes: scheduled, applied, and the base in force per definition,
kept in a form the state store can save and restore."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from datetime import datetime
from typing import Any

from streaming.methodology.base import Constituent, IndexBase
from streaming.methodology.review import (
    BaseChange,
    BaseChangeOutcome,
    BaseSchedule,
    DivisorPolicy,
    parse_policy,
)
from streaming.methodology.schedule import iso_utc
from streaming.ticks import parse_time

APPLIED_KEPT = 50  # applied changes remembered for the API and the log


def base_lines(base: IndexBase) -> list[list[Any]]:
    """[[secid, issuer, index_shares, reference_price], ...] for storage."""
    return [[c.secid, c.issuer, c.index_shares, c.reference_price] for c in base.constituents]


def base_from_lines(lines: list[list[Any]], source: str) -> IndexBase:
    """The inverse of base_lines."""
    return IndexBase(
        tuple(
            Constituent(str(secid), str(issuer), float(shares), reference_price=reference)
            for secid, issuer, shares, reference in lines
        ),
        source=source,
    )


def fingerprint(base: IndexBase, divisors: dict[str, float]) -> str:
    """A short digest of a base's lines and shares and its divisors: tells whether a definition
    file changed between two runs."""
    text = json.dumps(
        [[c.secid, c.index_shares] for c in base.constituents] + sorted(divisors.items())
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def change_record(change: BaseChange, policy: DivisorPolicy) -> dict[str, Any]:
    """A scheduled change with its whole base, for the state store."""
    return {
        **change.as_dict(),
        "policy": policy.value,
        "lines": base_lines(change.base),
    }


def change_from_record(record: dict[str, Any]) -> tuple[BaseChange, DivisorPolicy]:
    source = str(record.get("base", {}).get("source", "state"))
    change = BaseChange(
        definition=record["definition"],
        base=base_from_lines(record["lines"], source),
        effective=parse_time(record["effective"], "effective"),
        reason=record.get("reason", "base change"),
        official_divisors=record.get("official_divisors", {}),
    )
    return change, parse_policy(record.get("policy", "official"))


class BaseBook:
    """Pending changes (with the divisor policy of each), the last applied ones, and the base
    in force per definition where a change replaced the definition file's."""

    def __init__(self, default_policy: DivisorPolicy = DivisorPolicy.OFFICIAL) -> None:
        self.default_policy = default_policy
        self.schedule = BaseSchedule()
        self._policies: dict[tuple[str, datetime], DivisorPolicy] = {}
        self.applied: deque[dict[str, Any]] = deque(maxlen=APPLIED_KEPT)
        self.current: dict[str, dict[str, Any]] = {}

    def add(self, change: BaseChange, policy: DivisorPolicy | None = None) -> None:
        self.schedule.add(change)
        self._policies[(change.definition, change.effective)] = policy or self.default_policy

    def cancel(self, definition: str, effective: datetime) -> BaseChange | None:
        """Drop a pending change; None when none matches."""
        change = self.schedule.remove(definition, effective)
        if change is not None:
            del self._policies[(definition, change.effective)]
        return change

    def pop_due(self, now: datetime) -> list[tuple[BaseChange, DivisorPolicy]]:
        """Changes whose moment has come, earliest first, with their policies."""
        return [
            (change, self._policies.pop((change.definition, change.effective)))
            for change in self.schedule.pop_due(now)
        ]

    def record(
        self,
        outcome: BaseChangeOutcome,
        policy: DivisorPolicy,
        at: datetime,
        from_file: bool = False,
    ) -> None:
        """Remember an applied change: the API shows it and (unless the base is the definition
        file's, which a restart reads anyway) a restart keeps its base."""
        change = outcome.change
        self.applied.append(
            {**outcome.as_dict(), "policy": policy.value, "applied_at": iso_utc(at)}
        )
        if from_file:
            self.current.pop(change.definition, None)
            return
        self.current[change.definition] = {
            "label": change.reason,
            "effective": iso_utc(change.effective),
            "source": change.base.source,
            "lines": base_lines(change.base),
        }

    def view(self) -> dict[str, Any]:
        """The pending changes and the last applied ones, newest last."""
        return {
            "scheduled": [
                {**c.as_dict(), "policy": self._policies[(c.definition, c.effective)].value}
                for c in self.schedule.pending
            ],
            "applied": list(self.applied),
        }

    def saved(self) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """(bases in force, applied changes, scheduled changes) for EngineState."""
        scheduled = [
            change_record(c, self._policies[(c.definition, c.effective)])
            for c in self.schedule.pending
        ]
        return dict(self.current), list(self.applied), scheduled

    def load(
        self,
        bases: dict[str, dict[str, Any]],
        applied: list[dict[str, Any]],
        scheduled: list[dict[str, Any]],
    ) -> None:
        """Adopt what a saved state holds (the engine swaps the saved bases in itself)."""
        self.current = dict(bases)
        self.applied.extend(applied)
        for record in scheduled:
            change, policy = change_from_record(record)
            self.add(change, policy)

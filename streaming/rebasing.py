"""Base changes of a running engine: schedule, cancel, rebalance, apply at their moment with
continuity (or official) divisors, notice definition files changed between runs, and show it all.
Mixed into Engine; the attributes below are the engine's."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from streaming.bases import BaseBook, fingerprint
from streaming.errors import ConfigError
from streaming.methodology.calculator import IndexSpec
from streaming.methodology.definition import Family
from streaming.methodology.family import FamilyCalculator
from streaming.methodology.review import BaseChange, DivisorPolicy, apply_base_change
from streaming.methodology.schedule import iso_utc, utc_from_epoch
from streaming.methodology.weighting import weighted_base
from streaming.publication import EngineState, Publication

log = logging.getLogger("streaming.engine")


class Rebasing:
    """The base-change half of the engine."""

    calculator: FamilyCalculator
    family: Family
    group_of: dict[str, int]
    currency: dict[str, str]
    divisors: dict[str, float]
    bases: BaseBook
    clock: Callable[[], float]

    @property
    def fx_rate(self) -> float | None:
        """The USD/RUB rate in force now (the engine's)."""
        raise NotImplementedError

    @functools.cached_property
    def _definition_prints(self) -> dict[str, str]:
        """Each definition file's base fingerprint (the files do not change while running)."""
        return {
            d.name: fingerprint(d.base, {spec.code: spec.divisor for spec in d.indices})
            for d in self.family.definitions
        }

    def _file_prints(self) -> dict[str, str]:
        """Fingerprints of the bases still taken from the definition files."""
        current = self.bases.current
        return {name: p for name, p in self._definition_prints.items() if name not in current}

    def _adopt_changed_files(self, state: EngineState, latest: dict[str, Publication]) -> None:
        saved = state.extra.get("file_bases", {})
        now = utc_from_epoch(self.clock())
        for definition in self.family.definitions:
            name = definition.name
            before = saved.get(name)
            if name in state.bases or before is None or before == self._file_prints().get(name):
                continue
            published = [latest[c] for c in definition.codes if c in latest]
            if not published:
                continue
            group = self.calculator.group_index(name)
            prices = self.calculator.group_prices(group)
            current = {s: float(prices[i]) for s, i in self.calculator.position.items()}
            old = {c: state.divisors.get(c, self.divisors[c]) for c in definition.codes}
            official = {c: self.divisors[c] for c in definition.codes if self.divisors[c] != old[c]}
            change = BaseChange(name, definition.base, now, "definition file changed", official)
            specs = [IndexSpec(c, self.currency[c], old[c]) for c in definition.codes]
            policy = self.bases.default_policy
            outcome = apply_base_change(
                change,
                current,
                published[0].capitalization,
                specs,
                fx_rate=self.fx_rate,
                policy=policy,
            )
            for code, decision in outcome.decisions.items():
                self.divisors[code] = decision.adopted
                log.warning(
                    "definition %s changed since the last run: %s divisor %.4f -> %.4f "
                    "(continuity %.4f, file %s, jump %.4f points)",
                    name,
                    code,
                    decision.old_divisor,
                    decision.adopted,
                    decision.computed,
                    decision.official,
                    decision.jump,
                )
            self.bases.record(outcome, policy, now, from_file=True)

    def schedule_base_change(
        self, change: BaseChange, policy: DivisorPolicy | None = None
    ) -> dict[str, Any]:
        """Validate and schedule a new base; a moment already past takes effect at the next step."""
        if change.definition not in self.calculator.group_position:
            known = ", ".join(self.calculator.group_position)
            raise ConfigError(
                "definition", f"unknown definition {change.definition!r}; known: {known}"
            )
        codes = self.family.definitions[self.calculator.group_index(change.definition)].codes
        foreign = sorted(set(change.official_divisors) - set(codes))
        if foreign:
            raise ConfigError(
                "official_divisors", f"{', '.join(foreign)} not calculated from {change.definition}"
            )
        unpriced = [
            c.secid
            for c in change.base.constituents
            if c.secid not in self.calculator.position and c.reference_price is None
        ]
        if unpriced:
            raise ConfigError("base", f"new lines need a reference price: {', '.join(unpriced)}")
        self.bases.add(change, policy)
        log.info(
            "base change for %s scheduled at %s (%s)",
            change.definition,
            iso_utc(change.effective),
            change.reason,
        )
        return change.as_dict()

    def cancel_base_change(self, definition: str, effective: datetime) -> dict[str, Any]:
        """Cancel a scheduled base change; ConfigError naming it when there is none."""
        change = self.bases.cancel(definition, effective)
        if change is None:
            raise ConfigError(
                "effective", f"no base change for {definition} scheduled at {iso_utc(effective)}"
            )
        log.info("base change for %s at %s cancelled", definition, iso_utc(effective))
        return change.as_dict()

    def rebalance(
        self, name: str, effective: datetime | None = None, reason: str = "rebalancing"
    ) -> dict[str, Any]:
        """Schedule a base with the definition's weighting (capped or equal) recomputed at the
        current prices, taking effect with a continuity divisor (default: at the next step)."""
        if name not in self.calculator.group_position:
            raise ConfigError("definition", f"unknown definition {name!r}")
        group = self.calculator.group_index(name)
        definition = self.family.definitions[group]
        if definition.weighting == "given":
            raise ConfigError(
                "weighting", f"{name} takes its weights from its base file: post a new base"
            )
        base = self.calculator.groups[group].base
        prices = self.calculator.group_prices(group)
        current = {s: float(prices[self.calculator.position[s]]) for s in base.secids}
        new = weighted_base(base, definition.weighting, definition.capping, current)
        moment = effective or utc_from_epoch(self.clock())
        change = BaseChange(name, new, moment, reason)
        return self.schedule_base_change(change, DivisorPolicy.CONTINUITY)

    def apply_due_base_changes(self, epoch: float) -> None:
        """Swap in every base whose moment has come, with continuity (or official) divisors."""
        moment = utc_from_epoch(epoch)
        for change, policy in self.bases.pop_due(moment):
            group = self.calculator.group_index(change.definition)
            prices = self.calculator.group_prices(group)
            current = {s: float(prices[i]) for s, i in self.calculator.position.items()}
            codes = [c for c, g in self.group_of.items() if g == group]
            specs = [IndexSpec(c, self.currency[c], self.divisors[c]) for c in codes]
            old_mc = self.calculator.capitalization_at(group, prices)
            outcome = apply_base_change(
                change, current, old_mc, specs, fx_rate=self.fx_rate, policy=policy
            )
            self.calculator.replace_base(group, change.base)
            for code, decision in outcome.decisions.items():
                self.divisors[code] = decision.adopted
                log.info(
                    "base change %s: %s divisor %.4f -> %.4f (computed %.4f, official %s, %s ppm)",
                    change.reason,
                    code,
                    decision.old_divisor,
                    decision.adopted,
                    decision.computed,
                    decision.official,
                    None if decision.difference_ppm is None else round(decision.difference_ppm, 3),
                )
            self.bases.record(outcome, policy, moment)

    def bases_view(self) -> dict[str, Any]:
        """Current base per definition, scheduled and applied changes, divisors: for the API."""
        current = {}
        for definition in self.family.definitions:
            group = self.calculator.group_index(definition.name)
            base = self.calculator.groups[group].base
            changed = self.bases.current.get(definition.name)
            current[definition.name] = {
                "source": base.source,
                "lines": len(base),
                "secids": list(base.secids),
                "effective": changed["effective"]
                if changed
                else (
                    None
                    if definition.effective_date is None
                    else definition.effective_date.isoformat()
                ),
                "label": changed["label"] if changed else "definition file",
                "divisors": {code: self.divisors[code] for code in definition.codes},
            }
        return {"current": current, **self.bases.view()}

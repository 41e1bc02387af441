"""The engine: ticks in, capitalization updated per tick, one publication per index at every
grid instant aligned to the wall clock, state committed to the store."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from streaming.bases import BaseBook, base_from_lines
from streaming.errors import IndexTickerError, LeaseLost
from streaming.leader import LeaderLease, engine_id
from streaming.methodology.calculator import index_value
from streaming.methodology.contributions import line_points, top_movers
from streaming.methodology.definition import Family, IndexDefinition
from streaming.methodology.family import PROFILES, FamilyCalculator, Group
from streaming.methodology.fx import (
    AddOutcome,
    CbrRule,
    FxSchedule,
    FxSettings,
    FxStatus,
    FxStep,
    LiveRule,
    constant_step,
)
from streaming.methodology.guard import PriceGuard, Verdict
from streaming.methodology.phases import PublicationKind
from streaming.methodology.review import DivisorPolicy
from streaming.methodology.schedule import (
    iso_utc,
    next_grid_instant,
    utc_from_epoch,
    validate_cadence,
)
from streaming.methodology.timetable import AroundTheClock, Timetable
from streaming.metrics import ENGINE_REGISTRY
from streaming.publication import PUBLISHED_DECIMALS, EngineState, Publication
from streaming.rebasing import Rebasing
from streaming.sources import TickSource
from streaming.store.base import Store
from streaming.stream_reader import TickStreamReader
from streaming.tasks import cancel_and_wait
from streaming.ticks import Tick, TickColumns

log = logging.getLogger(__name__)

BACKLOG = 10_000  # publications kept for the history while the store is away
# Below this many ticks the per-tick path is quicker than building columns.
SMALL_BATCH = 16
FX = -2  # line position of the FX instrument's ticks in a columnar batch
UNKNOWN = -1  # line position of a secid no index holds
LAG_WINDOW = 10_000  # publication lags kept for status
WAKE_EARLY_SECONDS = 0.002  # the grid loop's timer fires this early, then spins to the instant

# Process-wide histograms for /metrics (one engine per process; docs/metrics.md).
PUBLISH_SECONDS = ENGINE_REGISTRY.histogram(
    "index_ticker_engine_publish_seconds",
    "Wall seconds one publication took, re-sum to commit.",
)
PUBLICATION_LAG_SECONDS = ENGINE_REGISTRY.histogram(
    "index_ticker_engine_publication_lag_seconds",
    "Seconds from a grid instant to its committed publication.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
COMMIT_SECONDS = ENGINE_REGISTRY.histogram(
    "index_ticker_engine_commit_seconds",
    "Seconds one commit to the store took, by outcome (ok, failed, lease_lost).",
    ("outcome",),
)


@dataclass(slots=True)
class EngineStats:
    """Counters for status and health."""

    ticks_applied: int = 0
    publications: int = 0
    commit_failures: int = 0
    last_publish_seconds: float = math.nan  # wall time one publication took
    last_drift: float = 0.0  # relative gap between incremental and re-summed capitalization
    # Seconds from each grid instant to its publication's commit, the latest LAG_WINDOW of them.
    lag: deque[float] = field(default_factory=lambda: deque(maxlen=LAG_WINDOW))

    def lag_summary(self) -> dict[str, float | int] | None:
        """p50/p99/max of the recent publication lags, in milliseconds."""
        if not self.lag:
            return None
        ms = np.asarray(self.lag) * 1000
        return {
            "count": len(ms),
            "p50": round(float(np.percentile(ms, 50)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3),
            "max": round(float(ms.max()), 3),
        }


@dataclass(slots=True)
class SubmitReport:
    """What happened to a batch: positions are within the batch handed to submit_report."""

    applied: int = 0  # ticks that moved prices now (released held ones included)
    released: int = 0  # held ticks confirmed and applied now
    held: list[tuple[int, str, str]] = field(default_factory=list)  # (position, secid, reason)
    # Held ticks dropped now: position -1 when the tick came in an earlier batch.
    discarded: list[tuple[int, str, str]] = field(default_factory=list)


class Engine(Rebasing):
    """Calculates every index of one definition and publishes it on the grid."""

    def __init__(
        self,
        family: Family | IndexDefinition,
        store: Store,
        *,
        cadence: int | None = None,
        timetable: Timetable | None = None,
        sources: Sequence[TickSource] = (),
        clock: Callable[[], float] = time.time,
        fx_rate: float | None = None,
        fx_settings: FxSettings | None = None,
        guard: PriceGuard[tuple[int, int, Tick]] | None = None,
        divisor_policy: DivisorPolicy = DivisorPolicy.OFFICIAL,
        grid: bool = True,
        feed_stale_seconds: float = 60.0,
        line_stale_seconds: float = 900.0,
        live_interval: float | None = 0.1,
        clock_rate: float = 1.0,
        lease: LeaderLease | None = None,
        ingest_stream: bool = False,
    ) -> None:
        self.family = family if isinstance(family, Family) else Family.of(family)
        self.store = store
        self.cadence = validate_cadence(cadence or self.family.cadence_seconds)
        self.timetable: Timetable = timetable or AroundTheClock(self.family.session.utc_offset)
        self.sources = tuple(sources)
        self.clock = clock
        self.fx_settings = fx_settings or self.family.fx or FxSettings(rule=CbrRule())
        self.fx = self.fx_settings.new_schedule()
        configured = fx_rate if fx_rate is not None else self.family.fx_rate
        self._fx_config = None if configured is None else constant_step(configured, "config")
        if self._fx_config is not None:
            self.fx.add(self._fx_config)
        self.calculator = FamilyCalculator(
            [Group(d.name, d.base, d.profile) for d in self.family.definitions]
        )
        self.group_of = {
            spec.code: self.calculator.group_index(d.name)
            for d in self.family.definitions
            for spec in d.indices
        }
        self.currency = {spec.code: spec.currency for spec in self.family.indices}
        self.divisors = {spec.code: spec.divisor for spec in self.family.indices}
        self.seq = {code: 0 for code in self.family.codes}
        self.previous_close: dict[str, float] = {}
        self.last_values: dict[str, float] = {}
        self.trading_day = self.timetable.trading_day(utc_from_epoch(clock())).isoformat()
        self.last_grid: float | None = None
        self.stats = EngineStats()
        self._group_secids: dict[int, tuple[npt.NDArray[np.intp], list[str]]] = {}
        self.state = "created"
        self._tasks: list[asyncio.Task[None]] = []
        # No [guard] table: no guard (every valid tick moves the index at once).
        # Items: (batch number, position in that batch, tick).
        self.guard: PriceGuard[tuple[int, int, Tick]] = guard or (
            PriceGuard.from_mapping(self.family.guard, self.family.source)
            if self.family.guard
            else PriceGuard(threshold=None)
        )
        self.bases = BaseBook(divisor_policy)
        self.grid = grid  # False: no grid loop; the owner calls publish() itself
        self.feed_stale_seconds = feed_stale_seconds  # no tick for this long: updates say stale
        self.line_stale_seconds = line_stale_seconds  # a line without a trade this long is listed
        self.live_interval = live_interval  # seconds between live values at most; None: off
        self.clock_rate = clock_rate  # clock seconds per real second (a replay runs faster)
        self.lease = lease  # None: the only engine on its store
        self._lease_task: asyncio.Task[None] | None = None
        self.ingest_stream = ingest_stream  # read ticks from the store's durable stream
        self.stream_id = "0-0"  # the last stream entry applied (saved with each publication)
        self.stream_reader: TickStreamReader | None = None  # while leading, with ingest_stream
        self.backlog: deque[Publication] = deque(
            maxlen=BACKLOG
        )  # published while the store was away
        self.last_tick_epoch: float | None = None  # wall clock of the last tick received
        self._batches = 0
        self._profiles = {d.name: d.profile for d in self.family.definitions}
        self._set_previous_close()
        self._published_prices = self.calculator.prices.copy()

    @property
    def known_secids(self) -> frozenset[str]:
        """Every line some index of the family holds (and the FX instrument under the live rule)."""
        lines = frozenset(self.calculator.position)
        if self.fx_instrument is not None:
            return lines | {self.fx_instrument}
        return lines

    @property
    def fx_instrument(self) -> str | None:
        """The exchange FX instrument whose ticks set the rate (live rule), else None."""
        rule = self.fx_settings.rule
        return rule.instrument if isinstance(rule, LiveRule) else None

    @property
    def fx_rate(self) -> float | None:
        """The USD/RUB rate in force now, roubles per dollar (None when there is none)."""
        step = self.fx.rate_at(utc_from_epoch(self.clock()))
        return None if step is None else step.rate

    def add_fx(self, step: FxStep) -> AddOutcome:
        """Take an FX step (a CBR publication, an exchange tick, an operator's rate)."""
        outcome = self.fx.add(step, now=utc_from_epoch(self.clock()))
        log.info(
            "fx %s from %s at %s: %s",
            step.rate,
            step.source,
            iso_utc(step.effective_from),
            outcome.name,
        )
        return outcome

    def fx_status(self, moment: datetime | None = None) -> FxStatus:
        """The FX in force at a moment (default now) with its age and whether it is stale."""
        when = moment or utc_from_epoch(self.clock())
        return self.fx.status(when, self.fx_settings.limits)

    @property
    def codes(self) -> tuple[str, ...]:
        return self.family.codes

    def value_of(self, code: str, capitalization: float, fx_rate: float | None = None) -> float:
        """Index points of one index from its group's capitalization (roubles) and FX (RUB/USD;
        default: the rate in force now)."""
        rate = fx_rate if fx_rate is not None else self.fx_rate
        return index_value(self.currency[code], capitalization, self.divisors[code], rate)

    # --- calculation -------------------------------------------------------------------

    def _set_previous_close(self) -> None:
        """Each index at its reference prices: the previous close before anything is published."""
        calc = self.calculator
        self.previous_close = {}
        for code, group in self.group_of.items():
            if self.currency[code] == "USD" and self.fx_rate is None:
                continue  # no FX yet: set at the first publication that has one
            self.previous_close[code] = self.value_of(code, calc.reference_capitalization(group))

    def _roll_day_if_needed(self, epoch: float) -> None:
        day = self.timetable.trading_day(utc_from_epoch(epoch)).isoformat()
        if day != self.trading_day:
            log.info("new trading day %s: last prices become the reference", day)
            self.calculator.roll_reference()
            self.trading_day = day
            self._set_previous_close()
            # Yesterday's last published value is today's previous close (with the FX it used).
            self.previous_close.update(self.last_values)

    def submit(self, ticks: Sequence[Tick]) -> int:
        """Apply validated ticks now, O(1) each; return how many moved prices."""
        return self.submit_report(ticks).applied

    def submit_report(self, ticks: Sequence[Tick]) -> SubmitReport:
        """Apply validated ticks through the price guard; report held and discarded ones.

        Columns and larger batches take the vectorised path, which gives the same prices,
        capitalizations, tick times, guard state and report as applying tick by tick."""
        if isinstance(ticks, TickColumns) or len(ticks) >= SMALL_BATCH:
            return self.submit_columns(TickColumns.of(ticks))
        return self.submit_each(ticks)

    def submit_each(self, ticks: Sequence[Tick]) -> SubmitReport:
        """submit_report one tick at a time (O(1) each): the reference the batch path matches."""
        report = self._start_batch(len(ticks))
        batch = self._batches
        for position, tick in enumerate(ticks):
            self._submit_one(batch, position, tick, report)
        self.stats.ticks_applied += report.applied
        return report

    def submit_columns(self, ticks: TickColumns) -> SubmitReport:
        """submit_report for a columnar batch, vectorised: the trades of every line where
        nothing is held, each within the guard threshold of the one before and each moving the
        guard's reference row, are applied at once; the other lines' trades (and FX ticks) go
        one by one, in order. Lines are independent, so the outcome is the per-tick one."""
        report = self._start_batch(len(ticks))
        batch = self._batches
        if not len(ticks):
            return report
        calc = self.calculator
        instrument = self.fx_instrument
        # Per name: a line position, or FX / UNKNOWN (both taken one by one).
        line_of_name = np.array(
            [FX if name == instrument else calc.position.get(name, UNKNOWN) for name in ticks.names]
            or [UNKNOWN],
            dtype=np.intp,
        )
        lines = line_of_name[ticks.codes]
        equity = np.flatnonzero(lines >= 0)
        equity_lines = lines[equity]
        moves = self.timetable.profile_mask(ticks.epochs[equity], ticks.phases[equity])
        blocked = np.zeros(len(calc.secids), dtype=np.bool_)
        for secid in self.guard.held():
            if secid in calc.position:
                blocked[calc.position[secid]] = True
        # The guard's reference is the last row: a trade that leaves it alone does not become
        # the next trade's reference, so its line is judged one tick at a time.
        blocked[equity_lines[~moves[-1]]] = True
        steady = self.guard.steady(equity_lines, ticks.prices[equity], calc.prices[-1], blocked)
        chosen = equity[steady]
        calc.apply_masked(
            lines[chosen], ticks.prices[chosen], ticks.epochs[chosen], moves[:, steady]
        )
        report.applied += len(chosen)
        rest = np.ones(len(ticks), dtype=np.bool_)
        rest[chosen] = False
        for position in np.flatnonzero(rest).tolist():
            self._submit_one(batch, position, ticks.tick(position), report)
        self.stats.ticks_applied += report.applied
        return report

    def _start_batch(self, size: int) -> SubmitReport:
        now = self.clock()
        self._roll_day_if_needed(now)
        if size:
            self.last_tick_epoch = now
        self._batches += 1
        return SubmitReport()

    def _submit_one(self, batch: int, position: int, tick: Tick, report: SubmitReport) -> None:
        """One tick through the guard into the calculator; what happened goes in the report."""
        if tick.secid == self.fx_instrument:
            self._fx_tick(tick)
            report.applied += 1
            return
        line = self.calculator.position.get(tick.secid)
        if line is None:
            # Ticks are validated against this engine's lines; a stream written under another
            # definition may still carry others: dropped, and said so.
            report.discarded.append((position, tick.secid, f"unknown secid {tick.secid!r}"))
            return
        # Every trade lands in the last row (the extended profile): its last accepted price.
        reference = float(self.calculator.prices[-1, line])
        decision = self.guard.check(tick.secid, tick.price, reference, (batch, position, tick))
        for guarded in decision.applied:
            assert guarded.item is not None
            accepted = guarded.item[2]
            self._apply(accepted)
            report.applied += 1
            if accepted is not tick:
                report.released += 1
        for guarded in decision.discarded:
            assert guarded.item is not None
            came_in, where, _ = guarded.item
            report.discarded.append(
                (where if came_in == batch else -1, guarded.secid, decision.reason)
            )
        if decision.verdict is Verdict.HOLD:
            report.held.append((position, tick.secid, decision.reason))

    def _apply(self, tick: Tick) -> None:
        profiles = self.timetable.tick_profiles(tick.time, tick.phase)
        self.calculator.apply(tick.secid, tick.price, tick.time.timestamp(), profiles)

    def _fx_tick(self, tick: Tick) -> None:
        rule = self.fx_settings.rule
        assert isinstance(rule, LiveRule)
        step = rule.step_for_tick(tick.price, tick.time)
        if step is not None:
            self.fx.add(step, now=utc_from_epoch(self.clock()))

    def values(self) -> dict[str, float]:
        """Current full-precision values from the incremental capitalization (not published)."""
        mc = self.calculator.capitalization
        return {code: self.value_of(code, float(mc[g])) for code, g in self.group_of.items()}

    async def publish(self, grid_epoch: float) -> list[Publication]:
        """Re-sum, build the publications due at this grid instant, commit them."""
        started = time.perf_counter()
        self._roll_day_if_needed(grid_epoch)
        self.apply_due_base_changes(grid_epoch)
        moment = utc_from_epoch(grid_epoch)
        by_profile = {
            profile: self.timetable.publication(moment, profile, self.cadence)
            for profile in set(self._profiles.values())
        }
        kinds = {name: by_profile[profile] for name, profile in self._profiles.items()}
        if all(kind is PublicationKind.NONE for kind in kinds.values()):
            return []
        incremental = self.calculator.capitalization.copy()
        mc = self.calculator.resum()
        self.stats.last_drift = float(np.max(np.abs(incremental - mc) / mc))
        fx = self.fx.status(moment, self.fx_settings.limits)
        publications = []
        stale_of: dict[int, tuple[str, ...]] = {}
        for code, group in self.group_of.items():
            kind = kinds[self.calculator.groups[group].name]
            if kind is PublicationKind.NONE:
                continue
            usd = self.currency[code] == "USD"
            if usd and fx.step is None:
                # Never publish a dollar value on a made-up rate: fx_status says what is missing.
                continue
            step = fx.step if usd else None
            rate = None if step is None else step.rate
            value = self.value_of(code, float(mc[group]), rate)
            previous = self.previous_close.setdefault(code, value)
            members = self.calculator.members(group)
            if group not in stale_of:  # one group can carry two indices (IMOEX and RTSI)
                stale_of[group] = self._stale_lines(group, members, grid_epoch)
            publications.append(
                Publication(
                    code=code,
                    currency=self.currency[code],
                    value=value,
                    time=moment,
                    seq=self.seq[code] + 1,
                    previous_close=previous,
                    capitalization=float(mc[group]),
                    divisor=self.divisors[code],
                    fx_rate=rate,
                    fx_source=None if step is None else step.source,
                    fx_effective=None if step is None else iso_utc(step.effective_from),
                    fx_stale=usd and fx.stale,
                    kind=kind.value,
                    status=self._status(kind, grid_epoch),
                    stale_lines=stale_of[group],
                    contributions=self._contributions(code, group, members, value, rate),
                )
            )
        seq = dict(self.seq)
        seq.update({p.code: p.seq for p in publications})
        state = self._snapshot(grid_epoch, seq)
        lease = None if self.lease is None else self.lease.lease
        if self.lease is not None and lease is None:
            return []  # the lease went while this grid instant was being built
        committing = time.perf_counter()
        try:
            await self.store.commit(state, [*self.backlog, *publications], lease)
            self.backlog.clear()
            COMMIT_SECONDS.labels("ok").observe(time.perf_counter() - committing)
        except LeaseLost:
            COMMIT_SECONDS.labels("lease_lost").observe(time.perf_counter() - committing)
            log.warning("publication at %s refused: another engine leads", iso_utc(moment))
            if self.lease is not None:
                self.lease.lost()
            return []
        except Exception:
            COMMIT_SECONDS.labels("failed").observe(time.perf_counter() - committing)
            # The store is away: subscribers of this process still get the value, and the
            # history catches up with the backlog at the first commit that goes through.
            self.stats.commit_failures += 1
            log.exception("commit of the %s publication failed", iso_utc(moment))
            self.backlog.extend(publications)
            self.store.deliver_locally(publications)
        for publication in publications:
            self.seq[publication.code] = publication.seq
            self.last_values[publication.code] = publication.value
        self._published_prices = self.calculator.prices.copy()
        self.last_grid = grid_epoch
        self.stats.publications += 1
        self.stats.last_publish_seconds = time.perf_counter() - started
        lag = (self.clock() - grid_epoch) / self.clock_rate
        self.stats.lag.append(lag)
        PUBLISH_SECONDS.observe(self.stats.last_publish_seconds)
        PUBLICATION_LAG_SECONDS.observe(lag)
        return publications

    def _status(self, kind: PublicationKind, epoch: float) -> str:
        """live, paused (auction values, the close) or stale (the feed has gone quiet)."""
        if kind is not PublicationKind.INTRADAY:
            return "paused"
        quiet = (
            self.last_tick_epoch is None or epoch - self.last_tick_epoch > self.feed_stale_seconds
        )
        return "stale" if quiet else "live"

    def _stale_lines(
        self, group: int, members: npt.NDArray[np.intp], epoch: float
    ) -> tuple[str, ...]:
        """Lines of a group with no trade within line_stale_seconds (or none at all)."""
        row = int(self.calculator.profile_of_group[group])
        times = self.calculator.tick_times[row, members]
        stale = ~(epoch - times <= self.line_stale_seconds)  # NaN (no trade) counts as stale
        return tuple(self.calculator.secids[i] for i in members[stale].tolist())

    def _secids_of(self, group: int, members: npt.NDArray[np.intp]) -> list[str]:
        """The secids of a group's lines, kept until its members change (a base change)."""
        cached = self._group_secids.get(group)
        if cached is None or cached[0] is not members:
            cached = self._group_secids[group] = (
                members,
                [self.calculator.secids[i] for i in members.tolist()],
            )
        return cached[1]

    def _contributions(
        self,
        code: str,
        group: int,
        members: npt.NDArray[np.intp],
        value: float,
        fx_rate: float | None,
    ) -> dict[str, Any]:
        """The largest movers since the previous publication and since the previous close."""
        calc = self.calculator
        if self._published_prices.shape != calc.prices.shape:  # a base change added lines
            grown = calc.prices.copy()
            grown[:, : self._published_prices.shape[1]] = self._published_prices
            self._published_prices = grown
        row = int(calc.profile_of_group[group])
        shares = calc.shares[members, group]
        now = calc.prices[row, members]
        secids = self._secids_of(group, members)
        then = self._published_prices[row, members]
        divisor = self.divisors[code]
        since_previous = line_points(shares, now, then, divisor, fx_rate)
        since_close = line_points(shares, now, calc.reference[row, members], divisor, fx_rate)
        result: dict[str, Any] = {
            "since_previous": top_movers(secids, since_previous),
            "since_close": top_movers(secids, since_close),
        }
        if fx_rate is not None:
            previous_value = self.last_values.get(code, value)
            result["fx_part"] = {
                "since_previous": value - previous_value - float(since_previous.sum()),
                "since_close": value - self.previous_close[code] - float(since_close.sum()),
            }
        return result

    def _snapshot(self, grid_epoch: float, seq: dict[str, int]) -> EngineState:
        bases, applied, scheduled = self.bases.saved()
        prices, reference, times = self.calculator.snapshot()
        main = PROFILES.index("main")
        profiles = {
            name: {
                "prices": {s: v[p] for s, v in prices.items()},
                "reference": {s: v[p] for s, v in reference.items()},
                "tick_times": {s: t for s, v in times.items() if (t := v[p]) is not None},
            }
            for p, name in enumerate(PROFILES)
            if name != "main"
        }
        return EngineState(
            trading_day=self.trading_day,
            prices={s: v[main] for s, v in prices.items()},
            reference_prices={s: v[main] for s, v in reference.items()},
            tick_times={s: t for s, v in times.items() if (t := v[main]) is not None},
            seq=seq,
            previous_close=dict(self.previous_close),
            divisors=dict(self.divisors),
            fx_rate=self.fx_rate,
            last_grid=grid_epoch,
            profiles=profiles,
            extra={
                "fx": self.fx.as_dict(),
                "file_bases": self._file_prints(),
                "stream_id": self.stream_id,
            },
            bases=bases,
            base_changes=applied,
            scheduled=scheduled,
        )

    def restore(self, state: EngineState, latest: dict[str, Publication] | None = None) -> None:
        """Carry on from a saved state: same bases, prices and divisors; sequence numbers
        continue upward. With the last publications, a definition file whose base or divisor
        changed since is taken as a base change now, its continuity divisor computed and
        reported (the file's divisor, when it changed, counts as the official one)."""
        self.bases.load(state.bases, state.base_changes, state.scheduled)
        for name, saved in state.bases.items():
            if name in self.calculator.group_position:
                group = self.calculator.group_index(name)
                self.calculator.replace_base(
                    group, base_from_lines(saved["lines"], saved["source"])
                )
                for code, group_of_code in self.group_of.items():
                    if group_of_code == group and code in state.divisors:
                        self.divisors[code] = state.divisors[code]
        for code, seq in state.seq.items():
            if code in self.seq:
                self.seq[code] = max(self.seq[code], seq)
        self.last_grid = state.last_grid
        tables: list[dict[str, dict[str, float]]] = [
            {
                "prices": state.prices,
                "reference": state.reference_prices,
                "tick_times": state.tick_times,
            }
            if name == "main"
            else state.profiles.get(name, {})
            for name in PROFILES
        ]

        def per_profile(key: str) -> dict[str, list[float | None]]:
            merged: dict[str, list[float | None]] = {}
            for p, table in enumerate(tables):
                for secid, value in table.get(key, {}).items():
                    merged.setdefault(secid, [None] * len(PROFILES))[p] = value
            return merged

        prices = per_profile("prices")
        self.calculator.restore(
            {s: [v if v is not None else math.nan for v in values] for s, values in prices.items()},
            {
                s: [v if v is not None else math.nan for v in values]
                for s, values in per_profile("reference").items()
            },
            per_profile("tick_times"),
        )
        self.trading_day = state.trading_day
        self.stream_id = str(state.extra.get("stream_id", self.stream_id))
        if latest:
            self._adopt_changed_files(state, latest)
        saved_fx = state.extra.get("fx")
        if saved_fx:
            try:
                self.fx = FxSchedule.from_dict(saved_fx)
            except IndexTickerError as error:
                log.warning("saved FX schedule unreadable, starting afresh: %s", error)
            if self._fx_config is not None:
                self.fx.add(self._fx_config)
        self._set_previous_close()
        # A restart later on the same day must not move the reference the day started with.
        for code, close in state.previous_close.items():
            if code in self.previous_close and state.divisors.get(code) == self.divisors.get(code):
                self.previous_close[code] = close
        self._roll_day_if_needed(self.clock())
        self._published_prices = self.calculator.prices.copy()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Lead at once (one engine), or stand by until the leader lease is free."""
        begin = getattr(self.clock, "begin", None)
        if callable(begin):
            begin()  # a replay's recorded time starts with the engine
        if self.lease is None:
            await self._lead()
            return
        self.state = "standby"
        self._lease_task = asyncio.create_task(self._lease_loop(), name="lease")

    async def _lead(self) -> None:
        """Restore from the (open) store, then run the grid, the sources and the ingest stream."""
        saved = await self.store.load_state()
        if saved is not None:
            self.bases = BaseBook(self.bases.default_policy)
            self.restore(saved, await self.store.latest())
            if self.last_grid is not None and self.last_grid > self.clock() + self.cadence:
                # A state from later than this clock (a replay run again into its namespace):
                # keep the sequence numbers going up, publish on this clock's grid.
                log.warning("saved state is ahead of the clock; publishing on the clock's grid")
                self.last_grid = None
            log.info("restored state of %s, last grid %s", saved.trading_day, saved.last_grid)
        self.state = "running"
        if self.grid:
            self._tasks.append(asyncio.create_task(self._grid_loop(), name="grid"))
            if self.live_interval:
                self._tasks.append(asyncio.create_task(self._live_loop(), name="live"))
        if self.ingest_stream:
            self._start_stream_reader()
        for source in self.sources:
            self._tasks.append(asyncio.create_task(self._run_source(source), name=source.name))

    async def _stand_down(self) -> None:
        """Stop publishing and reading: another engine leads now."""
        await self._cancel_tasks()
        self.stream_reader = None
        self.state = "standby"
        log.warning("standing by: another engine holds the leader lease")

    async def _lease_loop(self) -> None:
        assert self.lease is not None
        while True:
            leading = await self.lease.hold()
            if leading and self.state != "running":
                log.info("leading: taking over from the saved state")
                await self._lead()
            elif not leading and self.state == "running":
                await self._stand_down()
            await asyncio.sleep(self.lease.ttl_seconds / 3)

    def _start_stream_reader(self) -> None:
        """Read the durable tick stream from the entry after the committed state's."""
        consumer = self.lease.owner if self.lease is not None else engine_id()
        self.stream_reader = TickStreamReader(
            self.store,
            consumer,
            self._apply_stream,
            lambda: self.known_secids,
            lambda: utc_from_epoch(self.clock()),
        )
        self._tasks.append(
            asyncio.create_task(self.stream_reader.run(self.stream_id), name="ingest-stream")
        )

    def _apply_stream(self, ticks: TickColumns, last_entry: str) -> None:
        # One batch for everything read: the guard and the calculator see the same trades in
        # the same order as entry by entry (the stream has no one to report to).
        self.submit_report(ticks)
        self.stream_id = last_entry

    async def stop(self) -> None:
        """Cancel every task and give the lease up."""
        self.state = "stopped"
        if self._lease_task is not None:
            await cancel_and_wait(self._lease_task)
            self._lease_task = None
        await self._cancel_tasks()
        if self.lease is not None:
            await self.lease.release()

    async def _cancel_tasks(self) -> None:
        try:
            await cancel_and_wait(*self._tasks)
        finally:
            self._tasks.clear()

    async def _run_source(self, source: TickSource) -> None:
        try:
            await source.run(self.submit)
            log.info("source %s finished", source.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("source %s failed; the engine goes on without it", source.name)

    async def _grid_loop(self) -> None:
        while True:
            target = next_grid_instant(self.clock(), self.cadence)
            if self.last_grid is not None and target <= self.last_grid:
                target = self.last_grid + self.cadence
            await self._wait_until(target)
            try:
                await self.publish(target)
            except Exception:
                log.exception("publication at %s failed", iso_utc(utc_from_epoch(target)))

    async def _wait_until(self, target: float) -> None:
        """Sleep until the grid instant, waking a moment early and spinning the rest: the event
        loop's timers fire up to a millisecond or more late, the spin costs at most WAKE_EARLY
        of CPU per publication."""
        early = WAKE_EARLY_SECONDS * self.clock_rate
        # The event loop sleeps on a monotonic clock; re-check the wall clock until it is due.
        while (delay := target - self.clock()) > 0:
            if delay > early:
                await asyncio.sleep((delay - early) / self.clock_rate)
                continue
            spin_until = time.monotonic() + delay / self.clock_rate
            while time.monotonic() < spin_until:
                pass
            await asyncio.sleep(0)  # a clock that did not move (a test's) must not block the loop

    def live_message(self) -> dict[str, Any]:
        """Every index at its latest tick (not a publication: between grid instants), JSON-ready."""
        return {
            "type": "live",
            "time": iso_utc(utc_from_epoch(self.clock())),
            "values": {
                code: round(v, PUBLISHED_DECIMALS) for code, v in self._live_values().items()
            },
        }

    def _live_values(self) -> dict[str, float]:
        mc = self.calculator.capitalization
        rate = self.fx_rate
        return {
            code: self.value_of(code, float(mc[group]), rate)
            for code, group in self.group_of.items()
            if self.currency[code] == "RUB" or rate is not None
        }

    async def _live_loop(self) -> None:
        """Announce live values when a tick moved something, at most every live_interval s."""
        assert self.live_interval is not None
        announced = 0
        while True:
            await asyncio.sleep(self.live_interval)
            if self.stats.ticks_applied == announced:
                continue
            announced = self.stats.ticks_applied
            try:
                await self.store.announce_live(
                    json.dumps(self.live_message(), separators=(",", ":"))
                )
            except Exception:
                log.warning("live values not announced", exc_info=True)

    def status(self) -> dict[str, Any]:
        """What health checks and operators want to see."""
        now = utc_from_epoch(self.clock())
        last = None if self.last_grid is None else iso_utc(utc_from_epoch(self.last_grid))
        return {
            "state": self.state,
            "session": self.timetable.name,
            "session_open": self.timetable.is_open(now),
            "trading_day": self.trading_day,
            "cadence_seconds": self.cadence,
            "last_publication": last,
            "seq": dict(self.seq),
            "ticks_applied": self.stats.ticks_applied,
            "publications": self.stats.publications,
            "commit_failures": self.stats.commit_failures,
            "last_publish_ms": None
            if math.isnan(self.stats.last_publish_seconds)
            else round(self.stats.last_publish_seconds * 1000, 3),
            "publication_lag_ms": self.stats.lag_summary(),
            "store": self.store.name,
            "leader": None if self.lease is None else self.lease.held,
            "backlog": len(self.backlog),
            "stream_id": self.stream_id if self.ingest_stream else None,
            "stream": None if self.stream_reader is None else self.stream_reader.status(),
            "feed": "stale"
            if self.last_tick_epoch is None
            or self.clock() - self.last_tick_epoch > self.feed_stale_seconds
            else "live",
            "fx": self.fx_status().as_dict(),
            "sources": [source.name for source in self.sources],
            # What a source reports of itself (the ISS poller's data age, the Bank of Russia
            # poller's last rate), under its name.
            "feeds": {
                source.name: report()
                for source in self.sources
                if callable(report := getattr(source, "status", None))
            },
        }

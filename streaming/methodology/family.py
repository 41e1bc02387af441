"""Several indices over one tick stream: a lines × groups matrix of Q·FF·W, one price vector per
session profile, one capitalization per group, updated per tick in O(groups holding the line).

A group is one base (one capitalization); several published indices may share it (IMOEX and
RTSI). A profile is the set of trades a group's prices follow: "main" (main session only) or
"extended" (every session); a tick moves the prices of the profiles its trading phase counts in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streaming.errors import ConfigError, TickRejected
from streaming.methodology.base import IndexBase

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

PROFILES = ("main", "extended")


@dataclass(frozen=True, slots=True)
class Group:
    """One capitalization: a base and the profile of trades its prices follow."""

    name: str
    base: IndexBase
    profile: str = "main"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"{self.name}.profile", f"must be one of {PROFILES}")


class FamilyCalculator:
    """Prices per profile and line (roubles) and the capitalization of every group."""

    def __init__(self, groups: Sequence[Group], prices: Mapping[str, float] | None = None) -> None:
        if not groups:
            raise ConfigError("groups", "at least one index base is needed")
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ConfigError("groups", f"group names must be unique: {names}")
        self.groups = list(groups)
        self.group_position = {g.name: j for j, g in enumerate(self.groups)}
        self.secids: list[str] = []
        self.position: dict[str, int] = {}
        for group in self.groups:
            for secid in group.base.secids:
                self._add_line(secid)
        given = dict(prices or {})
        unknown = sorted(set(given) - set(self.position))
        if unknown:
            raise ConfigError("prices", f"unknown secids: {', '.join(unknown)}")
        n = len(self.secids)
        self.shares: FloatArray = np.zeros((n, len(self.groups)))
        reference = np.full(n, np.nan)
        for j, group in enumerate(self.groups):
            for c in group.base.constituents:
                i = self.position[c.secid]
                self.shares[i, j] = c.index_shares
                if c.reference_price is not None and math.isnan(reference[i]):
                    reference[i] = c.reference_price
        for secid, price in given.items():
            reference[self.position[secid]] = price
        missing = [s for s, p in zip(self.secids, reference.tolist(), strict=True) if p != p]
        if missing:
            raise ConfigError(
                "reference_price", f"no price for {', '.join(missing)} (base waprice is empty)"
            )
        self.profile_of_group: IntArray = np.array(
            [PROFILES.index(g.profile) for g in self.groups], dtype=np.intp
        )
        # Reference (previous close) and last prices per profile: rows follow PROFILES.
        self.reference: FloatArray = np.tile(reference, (len(PROFILES), 1))
        self.prices: FloatArray = self.reference.copy()
        self.tick_times: FloatArray = np.full((len(PROFILES), n), np.nan)
        self._index_holders()
        self.capitalization: FloatArray = self._full_sum()

    def _add_line(self, secid: str) -> int:
        if secid not in self.position:
            self.position[secid] = len(self.secids)
            self.secids.append(secid)
        return self.position[secid]

    def _index_holders(self) -> None:
        # Per group: its lines' positions (asked at every publication; they change only here).
        self._members = [
            np.array([self.position[s] for s in g.base.secids], dtype=np.intp) for g in self.groups
        ]
        # Per line and profile: the groups holding the line whose prices follow that profile.
        self._holders: list[list[tuple[IntArray, FloatArray]]] = []
        for i in range(len(self.secids)):
            per_profile = []
            for p in range(len(PROFILES)):
                groups = np.flatnonzero((self.shares[i] != 0) & (self.profile_of_group == p))
                per_profile.append((groups, self.shares[i, groups].copy()))
            self._holders.append(per_profile)

    def _full_sum(self) -> FloatArray:
        mc = np.empty(len(self.groups))
        for p in range(len(PROFILES)):
            columns = np.flatnonzero(self.profile_of_group == p)
            if len(columns):
                mc[columns] = self.prices[p] @ self.shares[:, columns]
        return mc

    # --- ticks ------------------------------------------------------------------------

    def apply(
        self,
        secid: str,
        price: float,
        epoch_seconds: float = math.nan,
        profiles: Iterable[int] = (0, 1),
    ) -> None:
        """Apply one trade price to the given profiles (row numbers of PROFILES), O(holders)."""
        i = self.position.get(secid)
        if i is None:
            raise TickRejected("secid", f"unknown secid {secid!r}: not a constituent")
        if not (math.isfinite(price) and price > 0):
            raise TickRejected("price", f"must be positive and finite, got {price!r}")
        for p in profiles:
            groups, shares = self._holders[i][p]
            old = self.prices[p, i]
            self.prices[p, i] = price
            self.tick_times[p, i] = epoch_seconds
            if len(groups):
                self.capitalization[groups] += (price - old) * shares

    def apply_batch(
        self,
        lines: IntArray,
        prices: FloatArray,
        epochs: FloatArray | None = None,
        profiles: Iterable[int] = (0, 1),
    ) -> None:
        """Apply many trades at once (line positions, prices in roubles, epoch seconds), in
        order: each line ends on its last price, every capitalization moves by the sum of its
        lines' moves. Vectorised; the caller has validated lines and prices."""
        if len(lines) == 0:
            return
        stamps = np.full(len(lines), np.nan) if epochs is None else epochs
        last = _last_of_each(lines)
        for p in profiles:
            self._apply_last(p, lines, prices, stamps, last)

    def apply_masked(
        self,
        lines: IntArray,
        prices: FloatArray,
        epochs: FloatArray,
        moves: npt.NDArray[np.bool_],
    ) -> None:
        """apply_batch where each trade moves its own profiles: `moves` is profiles × trades
        (True where the trade moves that row of PROFILES)."""
        if len(lines) == 0:
            return
        done: dict[bytes, tuple[IntArray, IntArray]] = {}
        for p in range(len(PROFILES)):
            row = moves[p]
            key = row.tobytes()
            if key not in done:
                chosen = np.flatnonzero(row)
                done[key] = (chosen, chosen[_last_of_each(lines[chosen])])
            chosen, last = done[key]
            if len(chosen):
                self._apply_last(p, lines, prices, epochs, last)

    def _apply_last(
        self, p: int, lines: IntArray, prices: FloatArray, epochs: FloatArray, last: IntArray
    ) -> None:
        """Move profile p to the prices of the trades at `last` (one per line, positions into
        the batch): each line ends on its last price, capitalizations move by the sum."""
        touched = lines[last]
        new = prices[last]
        columns = np.flatnonzero(self.profile_of_group == p)
        if len(columns):
            moved = new - self.prices[p, touched]
            self.capitalization[columns] += moved @ self.shares[np.ix_(touched, columns)]
        self.prices[p, touched] = new
        self.tick_times[p, touched] = epochs[last]

    def resum(self) -> FloatArray:
        """Recompute every capitalization from scratch (numpy) and adopt it."""
        self.capitalization = self._full_sum()
        return self.capitalization

    # --- views ------------------------------------------------------------------------

    def group_index(self, name: str) -> int:
        try:
            return self.group_position[name]
        except KeyError:
            raise ConfigError("group", f"unknown index base {name!r}") from None

    def members(self, group: int) -> IntArray:
        """Line positions of a group, in its base's order."""
        return self._members[group]

    def group_prices(self, group: int) -> FloatArray:
        """The prices a group is valued at, for every line of the universe."""
        row: FloatArray = self.prices[int(self.profile_of_group[group])]
        return row

    def reference_capitalization(self, group: int) -> float:
        """A group's capitalization at its reference (previous close) prices, roubles."""
        p = int(self.profile_of_group[group])
        return float(self.reference[p] @ self.shares[:, group])

    def capitalization_at(self, group: int, prices: FloatArray) -> float:
        return float(prices @ self.shares[:, group])

    def weights(self, group: int) -> FloatArray:
        """Each member line's share of the group capitalization, percent, in base order."""
        members = self.members(group)
        caps: FloatArray = self.group_prices(group)[members] * self.shares[members, group]
        weights: FloatArray = caps * (100.0 / float(caps.sum()))
        return weights

    # --- state ------------------------------------------------------------------------

    def roll_reference(self) -> None:
        """Start a new trading day: each profile's last prices become its reference prices."""
        self.reference = self.prices.copy()
        self.tick_times = np.full_like(self.tick_times, np.nan)

    def restore(
        self,
        prices: Mapping[str, Sequence[float]],
        reference: Mapping[str, Sequence[float]],
        tick_times: Mapping[str, Sequence[float | None]],
    ) -> None:
        """Adopt saved per-profile values (secid -> one value per profile) for known lines."""
        for table, target in ((prices, self.prices), (reference, self.reference)):
            for secid, values in table.items():
                i = self.position.get(secid)
                if i is None:
                    continue
                for p, value in enumerate(values[: len(PROFILES)]):
                    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
                        target[p, i] = value
        for secid, stamps in tick_times.items():
            i = self.position.get(secid)
            if i is None:
                continue
            for p, stamp in enumerate(stamps[: len(PROFILES)]):
                self.tick_times[p, i] = math.nan if stamp is None else stamp
        self.resum()

    def snapshot(
        self,
    ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float | None]]]:
        """Per-line prices, reference prices and tick times (None for none), one per profile."""
        secids = self.secids
        prices = dict(zip(secids, self.prices.T.tolist(), strict=True))
        reference = dict(zip(secids, self.reference.T.tolist(), strict=True))
        traded = np.flatnonzero(~np.isnan(self.tick_times).all(axis=0)).tolist()
        columns = self.tick_times[:, traded].T.tolist()
        times: dict[str, list[float | None]] = {
            secids[i]: [t if t == t else None for t in column]
            for i, column in zip(traded, columns, strict=True)
        }
        return prices, reference, times

    # --- base changes -------------------------------------------------------------------

    def replace_base(self, group: int, base: IndexBase) -> tuple[float, float]:
        """Swap a group's base at the current prices; return (MC old, MC new), roubles.

        Lines new to the universe take the base's reference price in every profile; a new line
        without one is an error naming it. Nothing changes when an error is raised.
        """
        new_lines = [c for c in base.constituents if c.secid not in self.position]
        unpriced = [c.secid for c in new_lines if c.reference_price is None]
        if unpriced:
            raise ConfigError("waprice", f"new lines need a reference price: {', '.join(unpriced)}")
        p = int(self.profile_of_group[group])
        old_mc = float(self.prices[p] @ self.shares[:, group])
        for c in new_lines:
            self._add_line(c.secid)
        grow = len(self.secids) - self.shares.shape[0]
        if grow:
            self.shares = np.vstack([self.shares, np.zeros((grow, len(self.groups)))])
            fresh = np.array([c.reference_price for c in new_lines], dtype=np.float64)
            self.prices = np.hstack([self.prices, np.tile(fresh, (len(PROFILES), 1))])
            self.reference = np.hstack([self.reference, np.tile(fresh, (len(PROFILES), 1))])
            self.tick_times = np.hstack([self.tick_times, np.full((len(PROFILES), grow), np.nan)])
        self.shares[:, group] = 0.0
        for c in base.constituents:
            self.shares[self.position[c.secid], group] = c.index_shares
        old = self.groups[group]
        self.groups[group] = Group(old.name, base, old.profile)
        self._index_holders()
        self.resum()
        return old_mc, float(self.capitalization[group])


def _last_of_each(lines: IntArray) -> IntArray:
    """Positions of the last trade of each distinct line in a batch, ordered by line."""
    # The last trade of each line wins: unique over the reversed batch finds it.
    _, first_from_end = np.unique(lines[::-1], return_index=True)
    last: IntArray = len(lines) - 1 - first_from_end
    return last

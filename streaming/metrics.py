"""Counters, gauges and histograms kept in memory and rendered in the Prometheus text exposition
format 0.0.4. Pure: no I/O and no event loop, cheap enough to update once per tick batch or
publication.

Labels are chosen by code (an index code, a tick's field name, a status class), never free text:
each metric keeps at most MAX_SERIES label sets and refuses more.
"""

from __future__ import annotations

import math
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate, pairwise
from typing import ClassVar, Generic, Protocol, TypeVar

from streaming.errors import ConfigError, FieldError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "index_ticker_"
MAX_SERIES = 1000  # label sets per metric: far above any set chosen by code
# Seconds, for latencies from a fraction of a millisecond (a Redis round trip on loopback) to
# many seconds (a store that has gone away).
SECONDS_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

LabelValues = tuple[str, ...]
Reading = float | Mapping[LabelValues, float]  # what a read-at-scrape callback returns


class Kind(StrEnum):
    """The metric types this module renders."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class Sample:
    """One line of the exposition: the metric name plus `suffix`, its labels, its value."""

    suffix: str  # "", "_bucket", "_sum" or "_count"
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True, slots=True)
class Family:
    """One metric as rendered: HELP and TYPE lines, then its samples."""

    name: str
    help: str
    kind: Kind
    samples: tuple[Sample, ...]


class Collector(Protocol):
    """Anything a Registry holds: a name and its samples now."""

    @property
    def name(self) -> str: ...

    def collect(self) -> Family: ...


def _check_name(name: str, kind: Kind) -> None:
    if not _NAME.fullmatch(name):
        raise ConfigError("name", f"{name!r} is not a Prometheus metric name")
    if not name.startswith(PREFIX):
        raise ConfigError("name", f"{name!r} must start with {PREFIX!r}")
    if kind is Kind.COUNTER and not name.endswith("_total"):
        raise ConfigError("name", f"counter {name!r} must end with '_total'")
    if kind is Kind.HISTOGRAM and name.endswith(("_bucket", "_sum", "_count")):
        raise ConfigError("name", f"histogram {name!r} must not end with a sample suffix")


def _check_labels(name: str, labels: Sequence[str], reserved: tuple[str, ...]) -> LabelValues:
    for label in labels:
        if not _LABEL.fullmatch(label) or label.startswith("__"):
            raise ConfigError("labels", f"{name}: {label!r} is not a Prometheus label name")
        if label in reserved:
            raise ConfigError("labels", f"{name}: label {label!r} is reserved for this type")
    if len(set(labels)) != len(labels):
        raise ConfigError("labels", f"{name}: label names repeat in {list(labels)!r}")
    return tuple(labels)


ChildT = TypeVar("ChildT")


class _Metric(Generic[ChildT]):
    """A named metric with a child per label set (one child, unlabelled, without labels)."""

    kind: ClassVar[Kind]
    reserved: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        read: Callable[[], Reading] | None = None,
    ) -> None:
        _check_name(name, self.kind)
        if not help.strip():
            raise ConfigError("help", f"{name}: must say what the metric means")
        self._name = name
        self.help = help
        self.label_names = _check_labels(name, labels, self.reserved)
        self._read = read
        self._children: dict[LabelValues, ChildT] = {}
        if not self.label_names and read is None:
            self._children[()] = self._new_child()

    @property
    def name(self) -> str:
        return self._name

    def _new_child(self) -> ChildT:
        raise NotImplementedError

    def labels(self, *values: str) -> ChildT:
        """The series of these label values (in label order), made on first use."""
        child = self._children.get(values)
        if child is None:
            child = self._add(values)
        return child

    def _add(self, values: LabelValues) -> ChildT:
        if self._read is not None:
            raise FieldError("labels", f"{self._name} is read at scrape time; it keeps no series")
        if len(values) != len(self.label_names):
            raise FieldError(
                "labels",
                f"{self._name} takes {len(self.label_names)} label values "
                f"{list(self.label_names)!r}, got {len(values)}",
            )
        if not all(isinstance(value, str) for value in values):
            raise FieldError("labels", f"{self._name}: label values must be strings: {values!r}")
        if len(self._children) >= MAX_SERIES:
            raise FieldError(
                "labels",
                f"{self._name}: more than {MAX_SERIES} label sets; a label carries free text",
            )
        child = self._children[values] = self._new_child()
        return child

    def _default(self) -> ChildT:
        child = self._children.get(())
        if child is None:
            if self._read is not None:
                raise FieldError(
                    "labels", f"{self._name} is read at scrape time; it keeps no value"
                )
            raise FieldError(
                "labels", f"{self._name} has labels {list(self.label_names)!r}: use .labels(...)"
            )
        return child

    def _pairs(self, values: LabelValues) -> tuple[tuple[str, str], ...]:
        return tuple(zip(self.label_names, values, strict=True))

    def _readings(self) -> Iterator[tuple[LabelValues, float]]:
        """(label values, value) of a metric read at scrape time."""
        assert self._read is not None
        reading = self._read()
        if isinstance(reading, Mapping):
            for values, value in reading.items():
                if len(values) != len(self.label_names):
                    raise FieldError(
                        "labels", f"{self._name}: read {values!r} for {list(self.label_names)!r}"
                    )
                yield values, float(value)
        else:
            if self.label_names:
                raise FieldError("labels", f"{self._name}: read one value for a labelled metric")
            yield (), float(reading)

    def _single_values(self, kept: Mapping[LabelValues, float]) -> Family:
        """The family of a one-sample-per-series metric: values kept, or read now."""
        values = self._readings() if self._read is not None else kept.items()
        samples = tuple(Sample("", self._pairs(labels), value) for labels, value in values)
        return Family(self._name, self.help, self.kind, samples)

    def collect(self) -> Family:
        raise NotImplementedError


class CounterValue:
    """One series of a counter: only goes up."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount` (>= 0)."""
        if not amount >= 0:  # also refuses NaN
            raise FieldError("amount", f"a counter only goes up, got {amount!r}")
        self.value += amount


class Counter(_Metric[CounterValue]):
    """A count since the process started (name ends in _total); or, with `read`, a count some
    other object keeps, read at scrape time."""

    kind = Kind.COUNTER

    def _new_child(self) -> CounterValue:
        return CounterValue()

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount` (>= 0) to the unlabelled series."""
        self._default().inc(amount)

    @property
    def value(self) -> float:
        """The unlabelled series' count."""
        return self._default().value

    def collect(self) -> Family:
        return self._single_values({v: child.value for v, child in self._children.items()})


class GaugeValue:
    """One series of a gauge: any value, up or down."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        """Set the value."""
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount`."""
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Take `amount` away."""
        self.value -= amount


class Gauge(_Metric[GaugeValue]):
    """A value now: set by code, or with `read` a callback returning it (a number, or a mapping
    of label values to numbers) at scrape time."""

    kind = Kind.GAUGE

    def _new_child(self) -> GaugeValue:
        return GaugeValue()

    def set(self, value: float) -> None:
        """Set the unlabelled series."""
        self._default().set(value)

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount` to the unlabelled series."""
        self._default().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        """Take `amount` away from the unlabelled series."""
        self._default().dec(amount)

    @property
    def value(self) -> float:
        """The unlabelled series' value."""
        return self._default().value

    def collect(self) -> Family:
        return self._single_values({v: child.value for v, child in self._children.items()})


def _check_buckets(name: str, buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = [float(bound) for bound in buckets]
    if bounds and bounds[-1] == math.inf:
        bounds.pop()  # +Inf is always there
    if not bounds:
        raise ConfigError("buckets", f"{name}: at least one finite upper bound")
    if not all(math.isfinite(bound) for bound in bounds):
        raise ConfigError("buckets", f"{name}: upper bounds must be finite, got {bounds!r}")
    if any(low >= high for low, high in pairwise(bounds)):
        raise ConfigError("buckets", f"{name}: upper bounds must increase, got {bounds!r}")
    return tuple(bounds)


class HistogramValues:
    """One series of a histogram: a count per bucket, the sum and the count of observations."""

    __slots__ = ("_bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation (seconds, or whatever unit the metric's name says); O(log
        buckets)."""
        if value != value:  # NaN would land in the first bucket
            raise FieldError("value", "a histogram cannot observe NaN")
        # bisect_left: the first bound >= value, as `le` (less than or equal) means.
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value
        self.count += 1

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe the seconds the block takes (monotonic clock), whether or not it raises."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started)

    def cumulative(self) -> list[int]:
        """Observations at or below each bound, +Inf last."""
        return list(accumulate(self.counts))


class Histogram(_Metric[HistogramValues]):
    """Observations in fixed buckets: cumulative `_bucket{le=...}`, `_sum` and `_count`."""

    kind = Kind.HISTOGRAM
    reserved = ("le",)

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = SECONDS_BUCKETS,
    ) -> None:
        self.bounds = _check_buckets(name, buckets)
        self._le = (*(format_value(bound) for bound in self.bounds), "+Inf")
        super().__init__(name, help, labels)

    def _new_child(self) -> HistogramValues:
        return HistogramValues(self.bounds)

    def observe(self, value: float) -> None:
        """Count one observation in the unlabelled series."""
        self._default().observe(value)

    def time(self) -> AbstractContextManager[None]:
        """Observe the seconds the block takes in the unlabelled series."""
        return self._default().time()

    def collect(self) -> Family:
        samples: list[Sample] = []
        for values, child in self._children.items():
            pairs = self._pairs(values)
            for le, count in zip(self._le, child.cumulative(), strict=True):
                samples.append(Sample("_bucket", (*pairs, ("le", le)), count))
            samples.append(Sample("_sum", pairs, child.sum))
            samples.append(Sample("_count", pairs, child.count))
        return Family(self._name, self.help, self.kind, tuple(samples))


MetricT = TypeVar("MetricT", bound=Collector)


class Registry:
    """Metrics by name, rendered in the order they were registered."""

    def __init__(self) -> None:
        self._metrics: dict[str, Collector] = {}

    def register(self, metric: MetricT) -> MetricT:
        """Add a metric; a name already taken is a ConfigError."""
        if metric.name in self._metrics:
            raise ConfigError("name", f"{metric.name!r} is already registered")
        self._metrics[metric.name] = metric
        return metric

    def counter(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        read: Callable[[], Reading] | None = None,
    ) -> Counter:
        """A new counter in this registry."""
        return self.register(Counter(name, help, labels, read))

    def gauge(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        read: Callable[[], Reading] | None = None,
    ) -> Gauge:
        """A new gauge in this registry."""
        return self.register(Gauge(name, help, labels, read))

    def histogram(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = SECONDS_BUCKETS,
    ) -> Histogram:
        """A new histogram in this registry."""
        return self.register(Histogram(name, help, labels, buckets))

    def get(self, name: str) -> Collector:
        """The metric of this name (KeyError when there is none)."""
        return self._metrics[name]

    def names(self) -> list[str]:
        """Names of the metrics held, in registration order."""
        return list(self._metrics)

    def collect(self) -> Iterator[Family]:
        """Every metric's family now, in registration order."""
        for metric in list(self._metrics.values()):
            yield metric.collect()


# The process-wide registry: counters and histograms that code increments where things happen.
REGISTRY = Registry()
# What an engine observes (publication and commit times, stream reads): rendered only by a
# process that runs an engine, so an API process shows no empty engine series.
ENGINE_REGISTRY = Registry()


def format_value(value: float) -> str:
    """A sample value as the text format writes it: NaN, +Inf, -Inf, whole numbers without
    a fraction, others as the shortest text that reads back as the same float."""
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)


def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline escaped, as label values need."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Backslash and newline escaped, as HELP text needs."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels)
    return "{" + inner + "}"


def render_families(families: Iterable[Family]) -> bytes:
    """Families in the text format 0.0.4 (UTF-8); a name given twice is a ConfigError."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if family.name in seen:
            raise ConfigError("name", f"{family.name!r} is rendered twice")
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind.value}")
        for sample in family.samples:
            lines.append(
                f"{family.name}{sample.suffix}{_label_text(sample.labels)} "
                f"{format_value(sample.value)}"
            )
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def render(*registries: Registry) -> bytes:
    """Every metric of these registries in the text format 0.0.4 (UTF-8)."""
    return render_families(family for registry in registries for family in registry.collect())

"""`streamrec produce`: read a source, pace, inject malformed records if asked, publish, report.

``produce(cfg, options)`` is what the CLI runs; ``publish_events(cfg, records)`` publishes an
explicit list of events and raw records (tests, the demo); ``publish`` is the loop both share.
The source is built before Kafka is contacted, so a missing input file is reported first.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from tqdm import tqdm

from streamrec.errors import ConfigError
from streamrec.producer.invalid import RawRecord, with_invalid
from streamrec.producer.pacing import Pacer
from streamrec.producer.publisher import EventPublisher
from streamrec.producer.sources import Reject, read_delimited, read_movielens
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.schemas.config import Config
from streamrec.schemas.events import EVENT_ID

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "movielens", "delimited")
DEFAULT_SYNTHETIC_COUNT = 10_000
# Rejects logged one by one at WARNING; the rest go to DEBUG and to the report's counts.
REJECTS_LOGGED = 10

Outgoing: TypeAlias = dict[str, Any] | RawRecord | Reject


@dataclass(frozen=True)
class ProduceOptions:
    """What to produce; the fields are the `streamrec produce` flags, with the same defaults."""

    source: str = "synthetic"
    path: str | None = None
    sep: str = ","
    header: bool = False
    count: int | None = None
    rate: float = 0.0
    users: int = 1000
    items: int = 500
    segments: int = 5
    new_user_share: float = 0.05
    inject_invalid: float = 0.0
    seed: int = 7
    progress: bool = True


@dataclass
class ProduceReport:
    """Counts of one run: valid events sent, records rejected before sending, records injected."""

    topic: str
    sent: int = 0
    rejected: int = 0
    reject_reasons: Counter[str] = field(default_factory=Counter)
    injected_invalid: int = 0
    injected_kinds: Counter[str] = field(default_factory=Counter)
    acknowledged: int = 0  # records (valid and injected) the broker acknowledged
    elapsed_s: float = 0.0

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.reject_reasons[reason] += 1

    def summary(self) -> str:
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"sent {self.sent} events to {self.topic} in {self.elapsed_s:.1f} s ({rate:,.0f}/s); "
            f"broker acknowledged {self.acknowledged} records",
            f"rejected {self.rejected} records before sending (invalid under the event contract)",
        ]
        lines += [f"  {n:>7}  {reason}" for reason, n in self.reject_reasons.most_common(5)]
        if len(self.reject_reasons) > 5:
            lines.append(f"  ({len(self.reject_reasons) - 5} more reasons)")
        if self.injected_invalid:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.injected_kinds.items()))
            lines.append(f"injected {self.injected_invalid} malformed records on purpose ({kinds})")
        return "\n".join(lines)


def check_options(options: ProduceOptions) -> None:
    """Raise ``ConfigError`` naming the flag when an option cannot work."""
    checks = [
        (options.source in SOURCES, f"--source must be one of {', '.join(SOURCES)}"),
        (
            options.source == "synthetic" or bool(options.path),
            f"--source {options.source} needs --path",
        ),
        (bool(options.sep), "--sep must not be empty"),
        (options.count is None or options.count >= 0, "--count must be >= 0"),
        (options.rate >= 0, "--rate must be >= 0 (0 = unthrottled)"),
        (options.users >= 1, "--users must be >= 1"),
        (options.segments >= 1, "--segments must be >= 1"),
        (options.items >= options.segments, "--items must be >= --segments"),
        (0 <= options.new_user_share <= 1, "--new-user-share must be within [0, 1]"),
        (0 <= options.inject_invalid < 1, "--inject-invalid must be within [0, 1)"),
    ]
    errors = [message for ok, message in checks if not ok]
    if errors:
        raise ConfigError("produce: " + "; ".join(errors))


def source_records(
    options: ProduceOptions,
) -> tuple[Iterator[dict[str, Any] | Reject], int | None]:
    """The source's records (events and rejected lines) and how many there will be, if known."""
    if options.source == "synthetic":
        count = DEFAULT_SYNTHETIC_COUNT if options.count is None else options.count
        world = SyntheticWorld(
            users=options.users,
            items=options.items,
            segments=options.segments,
            seed=options.seed,
            new_user_share=options.new_user_share,
        )
        return world.events(count), count
    assert options.path is not None  # check_options
    if options.source == "movielens":
        records = read_movielens(options.path)
    else:
        records = read_delimited(options.path, sep=options.sep, header=options.header)
    if options.count is None:
        return records, None
    return itertools.islice(records, options.count), options.count


def outgoing_records(options: ProduceOptions) -> tuple[Iterator[Outgoing], int | None]:
    """What ``produce`` sends: the source's records with malformed ones injected as asked."""
    check_options(options)
    records, total = source_records(options)
    if options.inject_invalid == 0:
        return records, total
    return with_invalid(records, options.inject_invalid, options.seed), total


def produce(cfg: Config, options: ProduceOptions) -> ProduceReport:
    """Publish the events ``options`` describe to ``cfg.kafka.events_topic``."""
    records, total = outgoing_records(options)
    # Read up to the first good record now: a file that is not in the format asked for is
    # reported before Kafka is contacted.
    first = next(records, None)
    if first is not None:
        records = itertools.chain([first], records)
    log.info(
        "producing source=%s path=%s count=%s rate=%s inject_invalid=%s seed=%s",
        options.source,
        options.path,
        total,
        options.rate,
        options.inject_invalid,
        options.seed,
    )
    with EventPublisher(cfg.kafka) as publisher:
        return publish(
            publisher, records, rate=options.rate, progress=options.progress, total=total
        )


def publish_events(
    cfg: Config,
    records: Iterable[Outgoing],
    *,
    rate: float = 0.0,
    progress: bool = False,
    topic: str | None = None,
) -> ProduceReport:
    """Publish explicit records: event dicts are validated, ``RawRecord`` bytes sent as they are,
    ``Reject`` counted as rejected. ``topic`` defaults to the config's events topic."""
    with EventPublisher(cfg.kafka, topic=topic) as publisher:
        return publish(publisher, records, rate=rate, progress=progress)


def publish(
    publisher: EventPublisher,
    records: Iterable[Outgoing],
    *,
    rate: float = 0.0,
    progress: bool = False,
    total: int | None = None,
) -> ProduceReport:
    """Send ``records`` through an open ``publisher`` at ``rate`` per second, then flush."""
    report = ProduceReport(topic=publisher.topic)
    acknowledged_before = publisher.stats.delivered
    pacer = Pacer(rate)
    start = time.monotonic()
    with tqdm(total=total, disable=not progress, unit="ev", desc=publisher.topic) as bar:
        for record in records:
            if isinstance(record, Reject):
                _log_reject(report, record.reason, f"line {record.line_no}")
                report.reject(record.reason)
                bar.update()
                continue
            pacer.wait()
            if isinstance(record, RawRecord):
                publisher.send_raw(record.key, record.value)
                report.injected_invalid += 1
                report.injected_kinds[record.kind] += 1
                continue  # the bar counts source records; injected ones come on top
            reason = publisher.send(record)
            if reason is None:
                report.sent += 1
            else:
                _log_reject(report, reason, f"event_id {record.get(EVENT_ID)!r}")
                report.reject(reason)
            bar.update()
        stats = publisher.flush()
    report.acknowledged = stats.delivered - acknowledged_before
    report.elapsed_s = time.monotonic() - start
    log.info(
        "produced topic=%s sent=%d rejected=%d injected_invalid=%d elapsed_s=%.2f",
        report.topic,
        report.sent,
        report.rejected,
        report.injected_invalid,
        report.elapsed_s,
    )
    return report


def _log_reject(report: ProduceReport, reason: str, where: str) -> None:
    level = logging.WARNING if report.rejected < REJECTS_LOGGED else logging.DEBUG
    log.log(level, "rejected topic=%s %s reason=%s", report.topic, where, reason)
    if report.rejected == REJECTS_LOGGED:
        log.warning("more rejects are logged at DEBUG only; the report counts them all")

"""When a schedule's ticks fall: cron expressions read by ``cronsim`` (5 fields, or 6
with seconds first), in the schedule's IANA zone (``zoneinfo``), returned in UTC.

Across DST transitions cronsim follows Debian cron: on the spring-forward day a
fixed-time tick in the skipped hour (``30 2 * * *`` in Europe/Berlin) fires at the
first instant after the gap (03:00); on the fall-back day a fixed-time tick fires
once, at its first occurrence, while a tick that matches every hour or more often
(``*/30 * * * *``) fires in both of the repeated hours. A tick is an instant, so the
repeated 02:30 are two ticks (and two jobs), never one fired twice."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from domain.errors import LedgerError
from domain.schedule import CatchUp


class InvalidSchedule(LedgerError):
    """The schedule's definition is invalid."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def zone(name: str) -> ZoneInfo:
    """The IANA zone of that name; InvalidSchedule if there is none."""
    if name not in _zones():
        raise InvalidSchedule("zone", f"unknown time zone {name!r} (an IANA name: Europe/Berlin)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule("zone", f"unknown time zone {name!r}") from None


def check(cron: str, zone_name: str) -> None:
    """InvalidSchedule unless the expression parses and ever fires in the zone."""
    at = datetime.now(zone(zone_name))
    try:
        next(CronSim(cron, at))
    except CronSimError as exc:
        raise InvalidSchedule("cron", f"invalid cron expression {cron!r}: {exc}") from None
    except StopIteration:
        raise InvalidSchedule("cron", f"the cron expression {cron!r} never fires") from None


def ticks_between(cron: str, zone_name: str, after: datetime, until: datetime) -> list[datetime]:
    """Every tick in (after, until], oldest first, in UTC."""
    return list(itertools.takewhile(lambda t: t <= until, _forward(cron, zone_name, after)))


def first_after(cron: str, zone_name: str, after: datetime) -> datetime | None:
    return next(_forward(cron, zone_name, after), None)


def latest(cron: str, zone_name: str, until: datetime) -> datetime | None:
    """The last tick at or before ``until`` (None if there is none)."""
    # Reverse iteration starts strictly before its start: one second past ``until``
    # (whole seconds, as every tick is) includes a tick at ``until`` itself.
    # (The sum is taken in UTC: local arithmetic would lose the fold of a repeated hour.)
    at = (until.replace(microsecond=0) + timedelta(seconds=1)).astimezone(zone(zone_name))
    for tick in CronSim(cron, at, reverse=True):
        return tick.astimezone(UTC)
    return None


def due(
    cron: str,
    zone_name: str,
    catch_up: CatchUp,
    *,
    after: datetime,
    now: datetime,
    on_time_s: float,
    limit: int,
) -> list[datetime]:
    """The ticks in (after, now] to fire now, oldest first, at most ``limit``. A tick at
    most ``on_time_s`` old is on time and fired under every policy (a slow pass does
    not lose one); older ones were missed (no scheduler ran): ``all`` fires them too,
    ``latest`` the most recent one if no tick is on time, ``none`` none."""
    if catch_up is CatchUp.ALL:
        return list(itertools.islice(ticks_between(cron, zone_name, after, now), limit))
    on_time_from = max(after, now - timedelta(seconds=on_time_s))
    on_time = list(itertools.islice(ticks_between(cron, zone_name, on_time_from, now), limit))
    if on_time or catch_up is CatchUp.NONE:
        return on_time
    tick = latest(cron, zone_name, now)
    return [tick] if tick is not None and tick > after else []


def _forward(cron: str, zone_name: str, after: datetime) -> itertools.chain[datetime]:
    start = after.astimezone(zone(zone_name))
    return itertools.chain.from_iterable(
        [tick.astimezone(UTC)] for tick in CronSim(cron, start.replace(microsecond=0))
    )


_ZONES: frozenset[str] = frozenset()


def _zones() -> frozenset[str]:
    global _ZONES  # noqa: PLW0603 - read once, on first use
    if not _ZONES:
        _ZONES = frozenset(available_timezones())
    return _ZONES

"""Time helpers: every datetime updraft handles is timezone-aware; storage is UTC."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def utcnow() -> datetime:
    """The current instant, aware, in UTC. Only processes call this; pure code gets `now` passed in."""
    return datetime.now(UTC)


@functools.lru_cache(maxsize=512)
def get_timezone(name: str) -> tzinfo:
    """An IANA time zone by name ("Europe/Berlin", "UTC"); ValueError naming it if unknown."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"unknown time zone {name!r}: expected an IANA name such as 'Europe/Berlin'")
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: expected an IANA name such as 'Europe/Berlin'") from None


def timezone_name(tz: tzinfo) -> str:
    """The IANA name of a tzinfo (ZoneInfo key, 'UTC' for UTC); pendulum/pytz-like objects by their name."""
    if tz is UTC:
        return "UTC"
    key = getattr(tz, "key", None) or getattr(tz, "zone", None) or getattr(tz, "name", None)
    if isinstance(key, str):
        return key
    name = tz.tzname(None)
    if name in ("UTC", "GMT", "Z"):
        return "UTC"
    raise ValueError(f"time zone {tz!r} has no IANA name; use zoneinfo.ZoneInfo('Area/City')")


def make_aware(value: datetime, tz: tzinfo) -> datetime:
    """A naive datetime is read as wall-clock time in ``tz``; an aware one is kept."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=tz)
    return value


def to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} where an aware one is required")
    return value.astimezone(UTC)


def parse_datetime(text: str, tz: tzinfo = UTC) -> datetime:
    """Parse ISO 8601 (a date alone means midnight); naive values are read in ``tz``."""
    raw = text.strip()
    if raw.endswith("Z") or raw.endswith("z"):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or datetime (e.g. 2024-01-31 or 2024-01-31T06:00:00+01:00)") from None
    return make_aware(value, tz)


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 with offset, or None."""
    return None if value is None else value.isoformat()

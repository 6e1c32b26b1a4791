"""Cron math, pure: validate an expression and a time zone, and find the next firing time.

Expressions are iterated on the local wall clock of the schedule's time zone,
then mapped to real time. Around daylight-saving changes that gives every wall
time exactly one firing: a time the spring change skips fires right after the
gap (02:30 → 03:30), and a time the autumn change repeats fires only the first
time.
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError

DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# Candidates skipped at most: the wall times a daylight-saving change repeats.
_MAX_STEPS = 1000


class BadSchedule(ValueError):
    """The expression or time zone is not usable; the message says why."""


def parse_cron(expression: str) -> str:
    """The expression, stripped, if it is 5 fields or a descriptor; else BadSchedule."""
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in DESCRIPTORS:
            raise BadSchedule(f"unknown descriptor {text!r}: use one of {', '.join(DESCRIPTORS)}")
        return text.lower()
    fields = text.split(" ")
    if len(fields) != 5:
        raise BadSchedule(f"needs 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise BadSchedule(f"{text!r} never fires: no date matches it") from None
    except (CroniterError, ValueError, KeyError) as e:
        raise BadSchedule(f"{text!r} {str(e).replace(f'[{text}] ', '')}") from None
    return text


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadSchedule(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris or UTC") from None


def next_fire(expression: str, zone: ZoneInfo, after: float) -> float:
    """The first firing strictly after ``after`` (POSIX seconds), as POSIX seconds."""
    wall = datetime.fromtimestamp(after, zone).replace(tzinfo=None, fold=0)
    iterator = croniter(expression, wall)
    for _ in range(_MAX_STEPS):
        try:
            candidate: datetime = iterator.get_next(datetime)
        except CroniterBadDateError:
            break
        # fold=0: a repeated wall time means its first occurrence; a skipped one
        # is read with the offset from before the change, which lands after the gap.
        moment = candidate.replace(tzinfo=zone, fold=0).timestamp()
        if moment > after:
            return moment
    raise BadSchedule(f"{expression!r} does not fire after {datetime.fromtimestamp(after, timezone.utc).isoformat()}")

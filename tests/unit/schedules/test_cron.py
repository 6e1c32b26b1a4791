from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypersdk.schedules.cron import BadSchedule, next_fire, parse_cron, parse_timezone

UTC = timezone.utc
BERLIN = parse_timezone("Europe/Berlin")
NEW_YORK = parse_timezone("America/New_York")


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def firings(expression, zone, start: str, count: int) -> list[str]:
    """The next ``count`` firings after ``start``, as local wall times with their UTC offset."""
    out, t = [], ts(start)
    for _ in range(count):
        t = next_fire(expression, zone, t)
        out.append(datetime.fromtimestamp(t, zone).strftime("%Y-%m-%d %H:%M%z"))
    return out


@pytest.mark.parametrize("expression", [
    "0 2 * * *", "*/15 * * * *", "0 9-17 * * mon-fri", "30 1 1,15 * *", "0 0 * jan,jul sun", "5 4 * * 0",
    "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", " 0  2 * * * ",
])
def test_standard_expressions_and_descriptors_are_accepted(expression):
    assert parse_cron(expression) == " ".join(expression.split()).lower() if expression.strip().startswith("@") \
        else parse_cron(expression) == " ".join(expression.split())


@pytest.mark.parametrize("expression, reason", [
    ("0 2 * *", "needs 5 fields"),
    ("0 2 * * * *", "needs 5 fields"),
    ("61 * * * *", "out of range"),
    ("0 25 * * *", "out of range"),
    ("x y z a b", "not acceptable"),
    ("@reboot", "unknown descriptor"),
    ("0 2 31 2 *", "never fires"),
    ("", "needs 5 fields"),
])
def test_bad_expressions_are_refused_with_the_reason(expression, reason):
    with pytest.raises(BadSchedule, match=reason):
        parse_cron(expression)


def test_unknown_time_zone_is_refused():
    with pytest.raises(BadSchedule, match="unknown time zone 'Mars/Olympus'"):
        parse_timezone("Mars/Olympus")
    with pytest.raises(BadSchedule, match="unknown time zone"):
        parse_timezone("../../etc/passwd")


def test_daily_in_utc_fires_at_the_next_occurrence_strictly_after():
    assert next_fire("0 2 * * *", parse_timezone("UTC"), ts("2026-01-17T01:59:59+00:00")) == ts("2026-01-17T02:00:00+00:00")
    assert next_fire("0 2 * * *", parse_timezone("UTC"), ts("2026-01-17T02:00:00+00:00")) == ts("2026-01-18T02:00:00+00:00")


def test_time_zone_shifts_the_firing():
    assert next_fire("0 2 * * *", NEW_YORK, ts("2026-01-17T00:00:00+00:00")) == ts("2026-01-17T07:00:00+00:00")


def test_a_time_skipped_by_the_spring_change_fires_once_right_after_the_gap():
    # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that day.
    assert firings("30 2 * * *", BERLIN, "2026-03-27T12:00:00+00:00", 4) == [
        "2026-03-28 02:30+0100", "2026-03-29 03:30+0200", "2026-03-30 02:30+0200", "2026-03-31 02:30+0200"]


def test_a_time_repeated_by_the_autumn_change_fires_once():
    # Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET, so 02:30 happens twice.
    assert firings("30 2 * * *", BERLIN, "2026-10-23T12:00:00+00:00", 3) == [
        "2026-10-24 02:30+0200", "2026-10-25 02:30+0200", "2026-10-26 02:30+0100"]


def test_every_half_hour_across_both_changes_never_fires_twice_at_one_instant_nor_goes_back():
    for start in ("2026-03-08T05:00:00+00:00", "2026-11-01T04:00:00+00:00"):  # New York's changes
        t, seen = ts(start), []
        for _ in range(12):
            t = next_fire("*/30 * * * *", NEW_YORK, t)
            seen.append(t)
        assert seen == sorted(set(seen))
        # 30 minutes apart, except around a change: the spring gap's wall times fire
        # right after it; the autumn repeat's wall times already fired once.
        assert all(b - a <= 5400 for a, b in zip(seen, seen[1:]))
        assert sum(1 for a, b in zip(seen, seen[1:]) if b - a != 1800) <= 1


@settings(max_examples=200, deadline=None)
@given(
    minute=st.integers(0, 59), hour=st.integers(0, 23),
    after=st.floats(min_value=ts("2020-01-01T00:00:00+00:00"), max_value=ts("2035-01-01T00:00:00+00:00")),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]),
)
def test_daily_firing_is_after_within_a_day_and_at_the_wall_time_unless_skipped(minute, hour, after, zone):
    tz = parse_timezone(zone)
    fire = next_fire(f"{minute} {hour} * * *", tz, after)
    assert after < fire <= after + 86400 + 7200
    local = datetime.fromtimestamp(fire, tz)
    wall_exists = datetime.fromtimestamp(local.replace(fold=0).timestamp(), tz).replace(tzinfo=None) == \
        local.replace(hour=hour, minute=minute, tzinfo=None)
    if wall_exists:
        assert (local.hour, local.minute) == (hour, minute)
    else:  # skipped by a spring change: fires just after the gap, by the gap's length
        late = local.replace(tzinfo=None) - local.replace(hour=hour, minute=minute, tzinfo=None)
        assert timedelta(0) < late <= timedelta(hours=1)

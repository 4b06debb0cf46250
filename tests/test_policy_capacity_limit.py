"""capacity_limit: an OpenADR 3 IMPORT_CAPACITY_LIMIT caps the site's import over time."""

from datetime import UTC, datetime, timedelta

from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Site
from policies.model import parse_policy, preset_text
from policies.plan import decide_opt, site_limit_at

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SITE = Site(100_000)


def cap_event(values_kw: list[float], unit: str | None = "kW", cancelled: bool = False
              ) -> DrEvent:
    step = timedelta(minutes=15)
    return DrEvent(
        event_id="doe", modification_number=0,
        status=EventStatus.CANCELLED if cancelled else EventStatus.ACTIVE, start=NOW,
        duration=step * len(values_kw), signals=(EventSignal(
            name="IMPORT_CAPACITY_LIMIT", type="limit", unit=unit, item="powerReal",
            intervals=tuple(SignalInterval(start=NOW + k * step, duration=step, value=v)
                            for k, v in enumerate(values_kw))),))


def policy(extra: str = "capacity_limit: {}"):
    return parse_policy(f"name: p\n{extra}\n", "<test>")


def test_the_cap_over_time_limits_the_site():
    event = cap_event([40, 25, 60])
    limits = [site_limit_at([event], policy(), SITE, NOW + timedelta(minutes=m))[0]
              for m in (0, 20, 40, 50)]
    assert limits == [40_000, 25_000, 60_000, 100_000]


def test_the_reason_names_signal_and_rule():
    _, reason = site_limit_at([cap_event([40])], policy(), SITE, NOW)
    assert "IMPORT_CAPACITY_LIMIT 40 kW" in reason and "capacity_limit" in reason


def test_units_of_the_signal_and_the_rule():
    assert site_limit_at([cap_event([30_000], unit="W")], policy(), SITE, NOW)[0] == 30_000
    unitless = cap_event([0.05], unit=None)
    assert site_limit_at([unitless], policy("capacity_limit: {unit: MW}"), SITE, NOW)[0] \
        == 50_000


def test_other_load_is_taken_off_and_the_cap_never_raises_capacity():
    rule = "capacity_limit: {other_load_kw: 15}"
    assert site_limit_at([cap_event([40])], policy(rule), SITE, NOW)[0] == 25_000
    assert site_limit_at([cap_event([10])], policy(rule), SITE, NOW)[0] == 0
    assert site_limit_at([cap_event([500])], policy(), SITE, NOW)[0] == 100_000


def test_a_cancelled_cap_is_lifted():
    assert site_limit_at([cap_event([40], cancelled=True)], policy(), SITE, NOW)[0] == 100_000


def test_without_the_rule_the_cap_is_not_acted_on_and_opted_out_of():
    without = policy("simple: {}")
    assert site_limit_at([cap_event([40])], without, SITE, NOW)[0] == 100_000
    assert decide_opt(cap_event([40]), without)[0] == "optOut"
    assert decide_opt(cap_event([40]), policy())[0] == "optIn"


def test_the_default_preset_follows_the_cap():
    default = parse_policy(preset_text("default"), "<preset default>")
    assert "IMPORT_CAPACITY_LIMIT" in default.handled_signals
    assert site_limit_at([cap_event([40])], default, SITE, NOW)[0] == 40_000

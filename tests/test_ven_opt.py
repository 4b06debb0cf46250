"""Operator opts: opt-out of an event and unavailability windows, through a real VTN (EiOpt)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import SiteHarness, wait_until
from test_end_to_end import registered, start_fleet, total_limit_w

from bridge.cli import main as cli
from bridge.web.port import EventOver, UnknownEvent


def opts_for(site: SiteHarness, event_id: str) -> list[dict]:
    return [o for o in site.vtn.received.created_opts if o.get("event_id") == event_id]


async def level_3_event(site: SiteHarness, minutes: int = 5) -> tuple[str, datetime]:
    ven_id = await registered(site)
    start = datetime.now(UTC) + timedelta(seconds=1)
    event_id = site.vtn.add_simple_event(ven_id, start, [(timedelta(minutes=minutes), 3)])
    return event_id, start


async def test_operator_opt_out_lifts_limits_tells_the_vtn_and_survives_restart(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=44)
    stations = await start_fleet(site, ["Current", "Current"])
    event_id, start = await level_3_event(site)
    later = start + timedelta(seconds=30)
    # (paused sessions resume at their minimum for a minute, then at their share)
    resumed = later + timedelta(minutes=1)
    await wait_until(lambda: total_limit_w(stations, later) == 0, what="level 3 pausing all")

    await bridge.operator.opt_out_event(event_id, "overrideStatus")

    sent = opts_for(site, event_id)
    assert len(sent) == 1
    assert sent[0]["opt_type"] == "optOut" and sent[0]["opt_reason"] == "overrideStatus"
    assert sent[0]["modification_number"] == 0
    assert sent[0]["ven_id"] == site.vtn.ven_id("test-site")
    await wait_until(lambda: total_limit_w(stations, resumed) > 20_000, what="limits lifted")
    stored = {e.event.event_id: e for e in bridge.store.events()}[event_id]
    assert stored.opt == "optOut" and "operator" in stored.opt_reason
    [opt] = bridge.operator.operator_opts()
    assert opt.sent_at is not None

    # a restart keeps the decision and does not send the opt again
    await site.stop_bridge()
    bridge = await site.start_bridge()
    assert bridge.dr.events[event_id].opt == "optOut"
    assert event_id not in [e.event_id for e in bridge.dr.active_events(later)]
    await wait_until(lambda: total_limit_w(stations, resumed) > 20_000,
                     what="limits after restart")
    assert len(opts_for(site, event_id)) == 1


async def test_opt_out_of_unknown_or_finished_events_is_refused(site: SiteHarness):
    bridge = await site.start_bridge()
    with pytest.raises(UnknownEvent):
        await bridge.operator.opt_out_event("no-such-event", "notParticipating")
    ven_id = await registered(site)
    # it must still be running when a (slow) poll brings it: an event over on arrival is
    # not taken at all
    event_id = site.vtn.add_simple_event(ven_id, datetime.now(UTC) + timedelta(seconds=3),
                                         [(timedelta(seconds=2), 1)])
    await wait_until(lambda: event_id in bridge.dr.events, timeout=20, what="the event")
    await wait_until(lambda: bridge.dr.events[event_id].event.is_over(datetime.now(UTC)),
                     timeout=20, what="the event's end")
    with pytest.raises(EventOver):
        await bridge.operator.opt_out_event(event_id, "notParticipating")
    assert site.vtn.received.created_opts == []


async def test_cli_opt_out_reaches_a_running_bridge(site: SiteHarness,
                                                    capsys: pytest.CaptureFixture[str]):
    bridge = await site.start_bridge(capacity_kw=44)
    stations = await start_fleet(site, ["Current", "Power"])
    event_id, start = await level_3_event(site)
    later = start + timedelta(seconds=30)
    resumed = later + timedelta(minutes=1)  # (after a resume's minute at the minimum)
    await wait_until(lambda: total_limit_w(stations, later) == 0, what="level 3 pausing all")

    # The CLI opens the store beside the running bridge, as a second process would.
    assert cli(["opt-out", event_id, "--config", str(site.config_path),
                "--reason", "the car park is closed"]) == 0
    assert f"opted out of {event_id}" in capsys.readouterr().out
    await wait_until(lambda: opts_for(site, event_id) != [], what="oadrCreateOpt at the VTN")
    assert opts_for(site, event_id)[0]["opt_reason"] == "notParticipating"
    await wait_until(lambda: total_limit_w(stations, resumed) > 20_000, what="limits lifted")
    assert bridge.dr.events[event_id].opt_reason.endswith("the car park is closed")

    assert cli(["opt-out", "nope", "--config", str(site.config_path)]) == 1
    assert "no event 'nope'" in capsys.readouterr().err


async def test_unavailability_window_sent_and_withdrawn(site: SiteHarness,
                                                        capsys: pytest.CaptureFixture[str]):
    bridge = await site.start_bridge()
    ven_id = await registered(site)
    await wait_until(lambda: bridge.ven.registration is not None, what="registration")
    start = datetime(2030, 7, 1, 14, tzinfo=UTC)
    opt_id = await bridge.operator.declare_unavailable(start, start + timedelta(hours=2),
                                                       "outageRunStatus")
    [sent] = site.vtn.received.created_opts
    assert sent["opt_id"] == opt_id and sent["opt_type"] == "optOut"
    assert sent["opt_reason"] == "outageRunStatus"
    window = sent["vavailability"]["components"]["available"]  # as openleadr parses one
    assert window["dtstart"] == start and window["duration"] == timedelta(hours=2)

    await bridge.operator.cancel_opt(opt_id)
    assert site.vtn.received.cancelled_opts == [(ven_id, opt_id)]
    with pytest.raises(KeyError):
        await bridge.operator.cancel_opt(opt_id)

    # the same through the CLI, picked up by the running bridge
    assert cli(["unavailable", "--from", "2030-08-01T08:00Z", "--until", "2030-08-01T09:00Z",
                "--config", str(site.config_path)]) == 0
    cli_opt = capsys.readouterr().out.split("(")[-1].rstrip(")\n")
    await wait_until(lambda: len(site.vtn.received.created_opts) == 2, what="the CLI's opt")
    assert site.vtn.received.created_opts[1]["opt_id"] == cli_opt
    assert cli(["cancel-opt", cli_opt, "--config", str(site.config_path)]) == 0
    await wait_until(lambda: (ven_id, cli_opt) in site.vtn.received.cancelled_opts,
                     what="the CLI's withdrawal")


async def test_an_unavailability_window_opts_out_of_the_events_it_overlaps(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=44)
    stations = await start_fleet(site, ["Current", "Current"])
    event_id, start = await level_3_event(site, minutes=30)
    later = start + timedelta(minutes=20)
    await wait_until(lambda: total_limit_w(stations, later) == 0, what="level 3 pausing all")

    opt_id = await bridge.operator.declare_unavailable(start + timedelta(minutes=10),
                                              start + timedelta(hours=1), "mustRun")
    assert bridge.dr.events[event_id].opt == "optOut"
    assert "unavailable" in bridge.dr.events[event_id].opt_reason
    await wait_until(lambda: total_limit_w(stations, later) > 20_000, what="limits lifted")
    # a window elsewhere changes nothing; withdrawing the overlapping one restores the event
    await bridge.operator.declare_unavailable(start + timedelta(days=1),
                                              start + timedelta(days=2), "")
    await bridge.operator.cancel_opt(opt_id)
    assert bridge.dr.events[event_id].opt == "optIn"
    await wait_until(lambda: total_limit_w(stations, later) == 0, what="the event again")

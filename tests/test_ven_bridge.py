"""The VEN's event profile as the bridge lives it: limits, the store, restarts, targets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import SiteHarness, site_config, wait_until
from oadr_payloads import Event, Signal, distribute_event, power_real
from test_end_to_end import registered, start_fleet, total_limit_w

from policies.events import EventStatus

GROUPS = """\
resources:
  bay-north: [CP0]
groups:
  fleet-vans: [CP0, CP1]
party_id: party-7
"""


def level(value: int, minutes: int = 5) -> list[Signal]:
    return [Signal("SIMPLE", "level", [(timedelta(minutes=minutes), value)])]


async def test_an_event_left_out_of_the_list_gives_capacity_back(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=44)
    stations = await start_fleet(site, ["Current", "Current"])
    await registered(site)
    start = datetime.now(UTC) + timedelta(seconds=1)
    later = start + timedelta(seconds=30)
    site.vtn.send_raw(distribute_event([Event("ev-gone", start, level(3))]))
    await wait_until(lambda: total_limit_w(stations, later) == 0, what="level 3 pausing all")
    site.vtn.send_raw(distribute_event([], request_id="req-2"))
    # (sessions it paused resume at their minimum for a minute, then at their share)
    await wait_until(lambda: total_limit_w(stations, later + timedelta(minutes=1)) > 20_000,
                     what="capacity back")
    assert bridge.dr.events["ev-gone"].event.status == EventStatus.CANCELLED
    stored = {e.event.event_id: e for e in bridge.store.events()}
    assert stored["ev-gone"].event.status == EventStatus.CANCELLED


async def test_random_offset_is_drawn_once_and_survives_a_restart(site: SiteHarness):
    bridge = await site.start_bridge()
    await registered(site)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    event = Event("ev-rand", start, level(2), start_after=timedelta(hours=1))
    site.vtn.send_raw(distribute_event([event]))
    await wait_until(lambda: "ev-rand" in bridge.dr.events, what="the event")
    offset = bridge.store.random_offset("ev-rand")
    assert offset is not None and timedelta(0) <= offset <= timedelta(hours=1)
    assert bridge.dr.events["ev-rand"].event.start == start + offset

    await site.stop_bridge()
    bridge = await site.start_bridge()
    await wait_until(lambda: bridge.ven.registration is not None, what="registration again")
    event.modification = 1  # a change after the restart: handed on again, same draw
    site.vtn.send_raw(distribute_event([event], request_id="req-2"))
    await wait_until(lambda: bridge.dr.events["ev-rand"].event.modification_number == 1,
                     what="the modification")
    assert bridge.dr.events["ev-rand"].event.start == start + offset
    assert bridge.store.random_offset("ev-rand") == offset


async def test_targets_map_to_configured_stations_and_foreign_events_are_left_alone(
        site: SiteHarness):
    bridge = await site.start_bridge(ven_extra=GROUPS)
    await registered(site)
    start = datetime.now(UTC) + timedelta(minutes=10)
    site.vtn.send_raw(distribute_event([
        Event("ev-group", start, level(1), targets={"groupID": ["fleet-vans"]}),
        Event("ev-bay", start, level(1), targets={"resourceID": ["bay-north"]}),
        Event("ev-party", start, level(1), targets={"partyID": ["party-7"]}),
        Event("ev-other", start, level(3), targets={"resourceID": ["bay-south"]}),
    ]))
    await wait_until(lambda: {"ev-group", "ev-bay", "ev-party"} <= set(bridge.dr.events),
                     what="the events for this site")
    assert bridge.dr.event_stations(bridge.dr.events["ev-group"].event) == {"CP0", "CP1"}
    assert bridge.dr.event_stations(bridge.dr.events["ev-bay"].event) == {"CP0"}
    assert bridge.dr.event_stations(bridge.dr.events["ev-party"].event) is None  # the whole site
    await wait_until(lambda: any(r["event_id"] == "ev-other"
                                 for r in site.vtn.received.event_responses),
                     what="the answer to the foreign event")
    assert "ev-other" not in bridge.dr.events
    [answer] = [r for r in site.vtn.received.event_responses if r["event_id"] == "ev-other"]
    assert answer["opt_type"] == "optOut"


async def test_report_values_come_from_the_running_bridge(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=44, ven_extra=GROUPS)
    t0 = datetime.now(UTC)
    await start_fleet(site, ["Current", "Power"])  # CP0 and CP1: the fleet-vans group
    await wait_until(lambda: bridge.reports.group_load_w("fleet-vans") > 0, what="group load")
    assert bridge.reports.group_load_w("fleet-vans") == bridge.reports.measured_load_w()
    assert bridge.reports.group_load_w("nobody") == 0
    await wait_until(lambda: bridge.reports.measured_energy_wh() > 0, what="energy registers")
    status = bridge.reports.site_status()
    assert status.online and not status.manual_override
    assert status.max_w == status.current_w == 44_000 and status.min_w == 0

    await registered(site)
    start = datetime.now(UTC)
    site.vtn.send_raw(distribute_event([Event("ev-now", start, level(1))]))
    await wait_until(lambda: bridge.reports.site_status().current_w == 22_000,
                     what="the event's limit")
    await bridge.operator.opt_out_event("ev-now", "overrideStatus")
    status = bridge.reports.site_status()
    assert status.manual_override and status.current_w == 44_000

    await wait_until(lambda: bridge.reports.load_history(t0, datetime.now(UTC)) != [],
                     what="stored site load")
    assert all(t0 <= at for at, _ in bridge.reports.load_history(t0, datetime.now(UTC)))


async def test_a_delta_for_a_group_counts_from_the_groups_measured_load(site: SiteHarness):
    # each EV takes 16 A (11 kW) of its station's 32 A: the vans draw 22 kW between them
    (site.tmp_path / "dispatch.yaml").write_text("name: dispatch\nload_dispatch: {}\n")
    site.config_path.write_text(site_config(
        site.vtn.url, site.ocpp_port, capacity_kw=66, ven_extra=GROUPS).replace(
        "policy: default", "policy: dispatch.yaml"))
    bridge = await site.start_bridge()
    stations = [site.add_station(f"CP{i}") for i in range(3)]
    await wait_until(lambda: bridge.station_events.stations_load_w(frozenset({"CP0", "CP1"}))
                     > 21_000,
                     what="the vans charging")
    await registered(site)
    start = datetime.now(UTC) + timedelta(seconds=1)
    during = start + timedelta(seconds=30)
    site.vtn.send_raw(distribute_event([Event("ev-delta", start, [Signal(
        "LOAD_DISPATCH", "delta", [(timedelta(minutes=5), 10)], power_real("W", "k"))],
        targets={"groupID": ["fleet-vans"]})]))
    # 22 kW less 10 kW: 6 kW each (counted from their 44 kW of hardware it would shed nothing)
    await wait_until(lambda: total_limit_w(stations[:2], during) <= 12_100,
                     what="the vans held to their measured load less the delta")
    assert all(s.composite_limit_w(during) >= 4_140 for s in stations[:2])
    assert abs(bridge.dr.baselines["ev-delta"] - 22_080) < 500


async def test_an_event_for_a_group_limits_only_its_stations(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=66, ven_extra=GROUPS)
    stations = await start_fleet(site, ["Current", "Current", "Current"])  # CP0, CP1: vans
    await registered(site)
    start = datetime.now(UTC) + timedelta(seconds=1)
    during = start + timedelta(seconds=30)
    site.vtn.send_raw(distribute_event([
        Event("ev-vans", start, level(3), targets={"groupID": ["fleet-vans"]})]))
    # The station outside the group gets its whole hardware limit (32 A x 3 x 230 V): a
    # raise, which the bridge sends once the group's stations have acknowledged theirs.
    await wait_until(lambda: total_limit_w(stations[:2], during) == 0
                     and stations[2].composite_limit_w(during) >= 22_000,
                     what="the group's stations paused by level 3, the other at full power")
    steps = bridge.planner.plan.stations["CP0"] if bridge.planner.plan else ()
    assert any("ev-vans" in step.reason for step in steps)

"""The OpenADR 3 VEN against a real OpenADR 3 VTN over HTTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from certs import Pki
from conftest import wait_until

from bridge.sim.vtn import free_port
from bridge.sim.vtn3 import Vtn3, iso
from policies.events import DrEvent, EventStatus, OptType
from ven.interface import Registration, SiteStatus
from ven.oadr3.auth import ClientCredentials
from ven.oadr3.outbox import SqliteOutbox
from ven.oadr3.settings import MissingSecret, Oadr3Keys, Ven3Settings, WebhookKeys
from ven.oadr3.ven import Ven3


class Listener:
    def __init__(self) -> None:
        self.events: list[DrEvent] = []
        self.registrations: list[Registration] = []
        self.load_w = 12_345.0

    async def on_event(self, event: DrEvent) -> OptType:
        self.events.append(event)
        return "optIn"

    def on_registration(self, registration: Registration) -> None:
        self.registrations.append(registration)

    def on_registration_cancelled(self) -> None:
        pass

    def measured_load_w(self) -> float:
        return self.load_w

    def measured_energy_wh(self) -> float:
        return 56_789.0

    def group_load_w(self, group_id: str) -> float:
        return {"fleet": 7_000.0}.get(group_id, 0.0)

    def site_status(self) -> SiteStatus:
        return SiteStatus(True, False, 11_000.0, 0.0, 44_000.0)

    def load_history(self, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        return []

    def site_voltages(self) -> dict[str, tuple[float, float]]:
        return {"L1": (221.5, 228.25)}

    def of(self, event_id: str) -> list[DrEvent]:
        return [e for e in self.events if e.event_id == event_id]


def settings(vtn: Vtn3 | str, **overrides) -> Ven3Settings:
    url = vtn.url if isinstance(vtn, Vtn3) else vtn
    fields = dict(vtn_url=url, ven_name="site-a", resource_id="site-a",
                  version="3.0.1" if "/3.0.1" in url else "3.1.0", client_id="site-a",
                  client_secret="secret-a", poll_interval=timedelta(seconds=0.3),
                  retry_initial=timedelta(milliseconds=100),
                  retry_max=timedelta(milliseconds=500), group_ids=frozenset({"fleet"}),
                  sample_interval=timedelta(seconds=0.1))
    fields.update(overrides)
    return Ven3Settings(**fields)


@pytest.fixture
async def vtn3() -> AsyncIterator[Vtn3]:
    server = Vtn3(port=free_port())
    await server.start()
    yield server
    await server.stop()


class Running:
    def __init__(self, ven: Ven3, listener: Listener) -> None:
        self.ven = ven
        self.listener = listener
        self.task = asyncio.create_task(ven.run())

    async def stop(self) -> None:
        await self.ven.stop()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def start() -> AsyncIterator:
    running: list[Running] = []

    def go(config: Ven3Settings, listener: Listener | None = None, **kwargs) -> Running:
        listener = listener or Listener()
        run = Running(Ven3(config, listener, **kwargs), listener)
        running.append(run)
        return run

    yield go
    for run in running:
        if not run.task.done():
            await run.stop()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def simple_event(program: str, level: int = 2, start: datetime | None = None,
                 minutes: int = 30, **fields) -> dict:
    return {"programID": program, "eventName": "peak",
            "intervalPeriod": {"start": iso(start or now() + timedelta(minutes=5)),
                               "duration": f"PT{minutes}M"},
            "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [level]}]}],
            **fields}


async def polls(run: Running, count: int) -> None:
    """Until the VEN has heard the VTN ``count`` more times (each poll is heard)."""
    for _ in range(count):
        contact = run.ven.last_contact
        await wait_until(lambda c=contact: run.ven.last_contact is not None
                         and (c is None or run.ven.last_contact > c), timeout=20, what="a poll")


async def registered(run: Running) -> None:
    await wait_until(lambda: run.listener.registrations != [], timeout=20, what="registration")


# registration and tokens -----------------------------------------------------------------------

async def test_registers_its_ven_and_resources_with_form_body_credentials(vtn3, start):
    vtn3.add_program("GAC")
    run = start(settings(vtn3))
    await registered(run)
    (ven,) = vtn3.vens.values()
    assert ven["venName"] == "site-a" and ven["clientID"] == "site-a" and "targets" not in ven
    assert sorted(r["resourceName"] for r in vtn3.resources.values()) == ["fleet", "site-a"]
    assert run.listener.registrations == [Registration(ven["id"], ven["id"])]
    assert run.ven.registration == Registration(ven["id"], ven["id"])
    assert list(run.ven.program_names.values()) == ["GAC"]
    assert run.ven.openadr_version == "3.1.0"
    form = vtn3.received.token_requests[0]
    assert form == {"grant_type": "client_credentials", "client_id": "site-a",
                    "client_secret": "secret-a"}
    posted = [b for m, p, b in vtn3.received.requests if m == "POST"]
    assert posted[0] == {"objectType": "VEN_VEN_REQUEST", "venName": "site-a"}
    assert all(None not in b.values() for b in posted)  # no explicit null sent


async def test_a_restarted_ven_finds_its_ven_object_instead_of_creating_another(vtn3, start):
    first = start(settings(vtn3))
    await registered(first)
    await first.stop()
    second = start(settings(vtn3))
    await registered(second)
    assert len(vtn3.vens) == 1 and len(vtn3.resources) == 2
    assert second.listener.registrations == first.listener.registrations


async def test_tokens_are_renewed_before_they_expire(start):
    vtn = Vtn3(port=free_port(), token_lifetime_s=1.2)
    await vtn.start()
    try:
        run = start(settings(vtn))
        await registered(run)
        credentials = run.ven.credentials
        assert isinstance(credentials, ClientCredentials)
        await wait_until(lambda: credentials.fetched >= 3, timeout=20, what="token renewals")
        event_id = await vtn.add_event(simple_event(vtn.add_program("P")))
        await wait_until(lambda: run.listener.of(event_id), timeout=20, what="event")
        # every token asked for through discovery, in the form body
        assert len(vtn.received.token_requests) == credentials.fetched
    finally:
        await vtn.stop()


async def test_a_token_the_vtn_rejects_early_is_replaced_at_once(vtn3, start):
    run = start(settings(vtn3, poll_interval=timedelta(seconds=0.2)))
    await registered(run)
    vtn3._tokens.clear()  # the VTN forgets (restart, revocation) every token it issued
    before = run.ven.credentials.fetched
    event_id = await vtn3.add_event(simple_event(vtn3.add_program("P")))
    await wait_until(lambda: run.listener.of(event_id), timeout=20, what="event")
    assert run.ven.credentials.fetched == before + 1


async def test_a_static_bearer_token_from_the_environment(vtn3, start):
    vtn3.static_tokens["issued-by-utility"] = "site-a"
    keys = Oadr3Keys.model_validate({"protocol": "3", "auth": {
        "bearer_token_env": "DRBRIDGE_TEST_TOKEN"}, "poll_interval_s": 0.3})
    with pytest.raises(MissingSecret, match="DRBRIDGE_TEST_TOKEN"):
        keys.settings(vtn_url=vtn3.url, ven_name="site-a", resource_id="site-a", environ={})
    config = keys.settings(vtn_url=vtn3.url, ven_name="site-a", resource_id="site-a",
                           environ={"DRBRIDGE_TEST_TOKEN": "issued-by-utility"})
    run = start(config)
    await registered(run)
    assert vtn3.received.token_requests == []


async def test_vtn_down_at_start_then_up(start):
    port = free_port()
    run = start(settings(f"http://127.0.0.1:{port}/openadr3/3.1.0"))
    await asyncio.sleep(1.5)  # several attempts against nothing
    assert not run.task.done() and run.listener.registrations == []
    assert run.ven.last_contact is None
    vtn = Vtn3(port=port)
    await vtn.start()
    try:
        event_id = await vtn.add_event(simple_event(vtn.add_program("P")))
        await wait_until(lambda: run.listener.of(event_id), timeout=20, what="event")
        assert run.ven.last_contact is not None
    finally:
        await vtn.stop()


async def test_known_events_keep_their_numbers_and_last_contact_ages_while_the_vtn_is_down(
        start):
    vtn = Vtn3(port=free_port())
    await vtn.start()
    run = start(settings(vtn))
    event_id = await vtn.add_event(simple_event(vtn.add_program("P")))
    await wait_until(lambda: run.listener.of(event_id), timeout=20, what="event")
    await vtn.stop()
    contact = run.ven.last_contact
    await asyncio.sleep(1.0)
    assert run.ven.last_contact == contact  # the fail-safe sees the VTN silent
    assert [e.status for e in run.listener.of(event_id)] == [EventStatus.FAR]  # not cancelled
    assert not run.task.done()


# events ----------------------------------------------------------------------------------------

async def test_events_of_each_type_with_their_times_values_and_units(vtn3, start):
    program = vtn3.add_program("DOE", payloadDescriptors=[
        {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "IMPORT_CAPACITY_LIMIT",
         "units": "KW"}])
    t0 = now() + timedelta(minutes=10)
    cap = await vtn3.add_event({
        "programID": program, "intervalPeriod": {"start": iso(t0), "duration": "PT15M"},
        "intervals": [{"id": k, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [v]},
                                             {"type": "EXPORT_CAPACITY_LIMIT", "values": [5]}]}
                      for k, v in enumerate([40, 25.5])]})
    price = await vtn3.add_event({
        "programID": program, "payloadDescriptors": [
            {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "PRICE", "units": "KWH",
             "currency": "EUR"}],
        "intervalPeriod": {"start": iso(t0), "duration": "PT2H"},
        "intervals": [{"id": 0, "payloads": [{"type": "PRICE", "values": [0.31, 0.12]}]}]})
    dispatch = await vtn3.add_event({
        "programID": program, "payloadDescriptors": [
            {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "DISPATCH_SETPOINT",
             "units": "KW"}],
        "intervalPeriod": {"start": iso(t0), "duration": "PT30M"},
        "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT", "values": [30]},
                                             {"type": "DISPATCH_SETPOINT_RELATIVE",
                                              "values": [8]},
                                             {"type": "ALERT_FLEX_ALERT",
                                              "values": ["save power"]}]}]})
    simple = await vtn3.add_event(simple_event(program, level=3, start=t0))
    run = start(settings(vtn3))
    await wait_until(lambda: all(run.listener.of(e) for e in (cap, price, dispatch, simple)),
                     timeout=20, what="four events")

    def signals(event_id):
        (event,) = run.listener.of(event_id)
        return event, {(s.name, s.type): s for s in event.signals}

    event, found = signals(cap)
    minutes15 = timedelta(minutes=15)
    assert (event.start, event.duration, event.modification_number) == (t0, 2 * minutes15, 0)
    limit = found["IMPORT_CAPACITY_LIMIT", "limit"]
    assert [(i.start, i.duration, i.value) for i in limit.intervals] == [
        (t0, minutes15, 40), (t0 + minutes15, minutes15, 25.5)]
    assert limit.unit == "kW" and event.market_context == "DOE" and event.whole_site
    assert found["EXPORT_CAPACITY_LIMIT", "limit"].intervals[0].value == 5
    _, found = signals(price)
    curve = found["ELECTRICITY_PRICE", "price"]
    assert [(i.start, i.value) for i in curve.intervals] == [(t0, 0.31),
                                                              (t0 + timedelta(hours=1), 0.12)]
    assert curve.currency == "EUR"
    event, found = signals(dispatch)
    assert found["LOAD_DISPATCH", "setpoint"].intervals[0].value == 30
    assert found["LOAD_DISPATCH", "setpoint"].unit == "kW"
    assert found["LOAD_DISPATCH", "delta"].intervals[0].value == 8
    assert event.ignored_signals == ("ALERT_FLEX_ALERT: not a payload type drbridge acts on",)
    _, found = signals(simple)
    assert found["SIMPLE", "level"].intervals[0].value == 3


async def test_modified_and_deleted_events_reach_the_listener_by_polling(vtn3, start):
    program = vtn3.add_program("P")
    event_id = await vtn3.add_event(simple_event(program, level=1))
    run = start(settings(vtn3))
    await wait_until(lambda: run.listener.of(event_id), timeout=20, what="event")
    await asyncio.sleep(1.0)  # polls that find nothing new hand nothing on
    assert len(run.listener.of(event_id)) == 1
    await vtn3.modify_event(event_id, {"intervals": [
        {"id": 0, "payloads": [{"type": "SIMPLE", "values": [3]}]}]})
    await wait_until(lambda: len(run.listener.of(event_id)) == 2, timeout=20, what="change")
    modified = run.listener.of(event_id)[1]
    assert modified.modification_number == 1
    assert modified.signals[0].intervals[0].value == 3
    await vtn3.delete_event(event_id)
    await wait_until(lambda: len(run.listener.of(event_id)) == 3, timeout=20, what="deletion")
    cancelled = run.listener.of(event_id)[2]
    assert cancelled.status == EventStatus.CANCELLED and cancelled.modification_number == 1
    await asyncio.sleep(0.8)
    assert len(run.listener.of(event_id)) == 3  # cancelled once


async def test_events_for_other_vens_or_resources_are_ignored(vtn3, start):
    program = vtn3.add_program("P")
    run = start(settings(vtn3))
    await registered(run)
    vtn3.grant("site-a", ["feeder-7"])
    vtn3.grant("site-a", ["grp-fleet"], resource_name="fleet")
    ours = await vtn3.add_event(simple_event(program, targets=["feeder-7"]))
    fleet = await vtn3.add_event(simple_event(program, targets=["grp-fleet"]))
    theirs = await vtn3.add_event(simple_event(program, targets=["feeder-9"]))
    control = await vtn3.add_event(simple_event(program))
    run.ven._registered_at = None  # read the granted targets now rather than in ten minutes
    await wait_until(lambda: run.listener.of(ours) and run.listener.of(fleet)
                     and run.listener.of(control), timeout=20, what="our events")
    assert run.listener.of(ours)[0].whole_site
    assert run.listener.of(fleet)[0].matched_groups == ("fleet",)
    # a VTN that shows every VEN every event: the VEN itself leaves out the others'
    vtn3.object_privacy = False
    await polls(run, 3)
    assert not run.listener.of(theirs)
    assert [e.status for e in run.listener.of(ours)] == [EventStatus.FAR]


@pytest.mark.parametrize("paging", [True, False])
async def test_long_event_lists_are_read_whole(vtn3, start, paging):
    vtn3.paging = paging
    program = vtn3.add_program("P")
    ids = [await vtn3.add_event(simple_event(program)) for _ in range(120)]
    run = start(settings(vtn3))
    await wait_until(lambda: all(run.listener.of(i) for i in ids), timeout=30, what="events")
    await polls(run, 3)
    assert len(run.listener.events) == 120  # each once, none cancelled
    asked = vtn3.received.event_lists
    await asyncio.sleep(1.5)  # five polls, and one under way
    assert vtn3.received.event_lists - asked <= 6 * (3 if paging else 1)


async def test_webhook_notifications_bring_changes_before_the_next_poll(vtn3, start):
    program = vtn3.add_program("P")
    port = free_port()
    hook = WebhookKeys(port=port, public_url=f"http://127.0.0.1:{port}/openadr3/notifications")
    run = start(settings(vtn3, poll_interval=timedelta(seconds=120), webhook=hook))
    await wait_until(lambda: vtn3.subscriptions, timeout=20, what="subscription")
    (subscription,) = vtn3.subscriptions.values()
    operation = subscription["objectOperations"][0]
    assert (subscription["programID"], operation["objects"], operation["callbackUrl"]) == \
        (program, ["EVENT"], hook.public_url)
    event_id = await vtn3.add_event(simple_event(program))
    await wait_until(lambda: run.listener.of(event_id), timeout=5, what="notified event")
    await vtn3.modify_event(event_id, {"intervals": [
        {"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}]})
    await wait_until(lambda: len(run.listener.of(event_id)) == 2, timeout=5, what="change")
    await vtn3.delete_event(event_id)
    await wait_until(lambda: len(run.listener.of(event_id)) == 3, timeout=5, what="deletion")
    assert run.listener.of(event_id)[2].status == EventStatus.CANCELLED
    assert [status for _, _, status in vtn3.received.notifications] == [200, 200, 200]
    # a restarted VEN replaces its subscription instead of adding one
    await run.stop()
    again = start(settings(vtn3, poll_interval=timedelta(seconds=120), webhook=hook))
    await wait_until(lambda: again.ven._subscribed, timeout=20, what="new subscription")
    assert len(vtn3.subscriptions) == 1


async def test_the_webhook_over_tls(vtn3, start, tmp_path: Path):
    pki = Pki(tmp_path)
    server = pki.issue("127.0.0.1", server=True)
    vtn3.callback_ssl = ssl.create_default_context(cafile=pki.ca_file)
    program = vtn3.add_program("P")
    port = free_port()
    hook = WebhookKeys(port=port, public_url=f"https://127.0.0.1:{port}/openadr3/notifications",
                       tls_cert=server.cert, tls_key=server.key)
    run = start(settings(vtn3, poll_interval=timedelta(seconds=120), webhook=hook))
    await wait_until(lambda: run.ven._subscribed, timeout=20, what="subscription")
    event_id = await vtn3.add_event(simple_event(program))
    await wait_until(lambda: run.listener.of(event_id), timeout=5, what="notified event")
    assert vtn3.received.notifications[0][2] == 200


async def test_the_webhook_refuses_strangers_and_garbage(vtn3, start, caplog):
    vtn3.add_program("P")
    port = free_port()
    url = f"http://127.0.0.1:{port}/openadr3/notifications"
    run = start(settings(vtn3, poll_interval=timedelta(seconds=120),
                         webhook=WebhookKeys(port=port, public_url=url)))
    await wait_until(lambda: run.ven._subscribed, timeout=20, what="subscription")
    token = next(iter(vtn3.subscriptions.values()))["objectOperations"][0]["bearerToken"]
    event = {"objectType": "EVENT", "operation": "CREATE",
             "object": {"id": "forged", "programID": "P", **simple_event("P")}}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=event) as reply:
            assert reply.status == 401
        async with session.post(url, json=event,
                                headers={"Authorization": "Bearer guess"}) as reply:
            assert reply.status == 401
        auth = {"Authorization": f"Bearer {token}"}
        async with session.post(url, data=b"[1, 2", headers=auth) as reply:
            assert reply.status == 400
        async with session.post(url, data=b"x" * (2 * 1024 * 1024), headers=auth) as reply:
            assert reply.status == 413
        with caplog.at_level(logging.ERROR):
            async with session.post(url, json={"objectType": "EVENT", "operation": "CREATE",
                                               "object": {"id": 5}}, headers=auth) as reply:
                assert reply.status == 200
    assert run.listener.of("forged") == [] and not run.task.done()
    assert "refused notification" in caplog.text


async def test_hostile_json_is_refused_with_a_log_line_and_nothing_crashes(vtn3, start, caplog):
    program = vtn3.add_program("P")
    vtn3.hostile_events = [
        "not an object", 42, None, [],
        {"id": "no-program"},
        {"id": "wrong-types", "programID": program, "intervals": "many"},
        {"id": "huge", "programID": program, "intervalPeriod": {"start": iso(now()),
                                                                "duration": "PT1M"},
         "intervals": [{"id": k, "payloads": [{"type": "SIMPLE", "values": [1]}]}
                       for k in range(5000)]},
        {"id": "unknown-enums", "programID": program,
         "intervalPeriod": {"start": iso(now() + timedelta(minutes=5)), "duration": "PT1H"},
         "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "BANANAS"}],
         "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [9]},
                                              {"type": "X-UNKNOWN", "values": [{"a": 1}]}]}]},
        {"id": "bad-time", "programID": program,
         "intervalPeriod": {"start": "the day after tomorrow", "duration": "PT1H"},
         "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}]},
        {"id": "nan", "programID": program,
         "intervalPeriod": {"start": iso(now() + timedelta(minutes=5)), "duration": "PT1H"},
         "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": ["NaN"]}]}]},
    ]
    good = await vtn3.add_event(simple_event(program))
    with caplog.at_level(logging.INFO):
        run = start(settings(vtn3))
        await wait_until(lambda: run.listener.of(good), timeout=20, what="the good event")
        await asyncio.sleep(0.8)  # more polls: each refusal is logged once
    assert {e.event_id for e in run.listener.events} == {good, "unknown-enums", "nan"}
    unknown = run.listener.of("unknown-enums")[0]
    assert unknown.signals == ()  # its payloads are not acted on, and the VEN says why
    assert any("BANANAS" in why for why in unknown.ignored_signals)
    assert any("X-UNKNOWN" in why for why in unknown.ignored_signals)
    assert "not a finite number" in run.listener.of("nan")[0].ignored_signals[0]
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    for event_id in ("no-program", "wrong-types", "huge", "bad-time"):
        assert sum(event_id in line for line in refused) == 1, event_id
    assert not run.task.done()


async def test_json_nested_deeper_than_python_reads_is_refused_and_retried(vtn3, start,
                                                                          caplog):
    program = vtn3.add_program("P")
    good = await vtn3.add_event(simple_event(program))
    vtn3.raw_events = "[" * 200_000 + "]" * 200_000  # 400 kB: within the size bound
    with caplog.at_level(logging.WARNING):
        run = start(settings(vtn3))
        await wait_until(lambda: "nests too deep" in caplog.text, timeout=20, what="log")
    assert not [r for r in caplog.records if r.exc_info]  # a warning, not a traceback
    assert not run.task.done() and run.listener.events == []
    vtn3.raw_events = None
    await wait_until(lambda: run.listener.of(good), timeout=20, what="the event after")


async def test_an_event_list_that_is_not_a_list_is_retried(vtn3, start, caplog):
    program = vtn3.add_program("P")
    good = await vtn3.add_event(simple_event(program))
    original = vtn3._list_events

    async def garbage(request):
        from aiohttp import web
        return web.json_response({"events": "later"})

    vtn3._list_events = garbage  # type: ignore[method-assign]
    await vtn3.stop()  # routes are bound at start: restart the VTN with the garbage
    await vtn3.start()
    with caplog.at_level(logging.WARNING):
        run = start(settings(vtn3))
        await wait_until(lambda: "expected a list" in caplog.text, timeout=20, what="log")
    assert not run.task.done()
    vtn3._list_events = original  # type: ignore[method-assign]
    await vtn3.stop()
    await vtn3.start()
    await wait_until(lambda: run.listener.of(good), timeout=20, what="event after recovery")


async def test_time_stamps_without_T_or_zone_are_read_as_utc(vtn3, start, caplog):
    vtn3.naive_timestamps = True
    t0 = now() + timedelta(minutes=7)
    event_id = await vtn3.add_event(simple_event(vtn3.add_program("P"), start=t0))
    with caplog.at_level(logging.WARNING):
        run = start(settings(vtn3))
        await wait_until(lambda: run.listener.of(event_id), timeout=20, what="event")
        await wait_until(lambda: "without a zone" in caplog.text, timeout=5, what="log")
    assert run.listener.of(event_id)[0].start == t0


async def test_openadr_3_0_1(start):
    vtn = Vtn3(port=free_port(), version="3.0.1")
    await vtn.start()
    try:
        program = vtn.add_program("P")
        ours = await vtn.add_event(simple_event(program, targets=[
            {"type": "RESOURCE_NAME", "values": ["fleet"]}]))
        theirs = await vtn.add_event(simple_event(program, targets=[
            {"type": "VEN_NAME", "values": ["site-b"]}]))
        run = start(settings(vtn))
        await wait_until(lambda: run.listener.of(ours), timeout=20, what="event")
        assert run.listener.of(ours)[0].matched_groups == ("fleet",)
        assert sorted(r["resourceName"] for r in vtn.resources.values()) == ["fleet", "site-a"]
        assert {"venName": "site-a"} in [b for m, _, b in vtn.received.requests if m == "POST"]
        await asyncio.sleep(0.6)
        assert not run.listener.of(theirs)
    finally:
        await vtn.stop()


# reports ---------------------------------------------------------------------------------------

def report_event(program: str, seconds: int = 1, **descriptor) -> dict:
    return {"programID": program, "eventName": "measure",
            "intervalPeriod": {"start": iso(now() + timedelta(seconds=1)),
                               "duration": f"PT{seconds}S"},
            "intervals": [{"id": k, "payloads": [{"type": "SIMPLE", "values": [0]}]}
                          for k in range(2)],
            "reportDescriptors": [{"payloadType": "DEMAND", "units": "KW", **descriptor}]}


async def test_reports_reach_the_vtn_with_the_measured_values(vtn3, start):
    program = vtn3.add_program("P")
    event_id = await vtn3.add_event(report_event(program))
    volts = await vtn3.add_event({**report_event(program), "reportDescriptors": [
        {"payloadType": "READING", "units": "VOLTS"}]})
    run = start(settings(vtn3, voltage_phases=("L1", "L2", "L3")))
    await wait_until(lambda: vtn3.reports_for(event_id) and vtn3.reports_for(volts),
                     timeout=20, what="reports")
    (report,) = vtn3.reports_for(event_id)
    assert report["clientName"] == "site-a" and "programID" not in report
    assert report["payloadDescriptors"] == [{"objectType": "REPORT_PAYLOAD_DESCRIPTOR",
                                             "payloadType": "DEMAND", "readingType": "MEAN",
                                             "units": "KW"}]
    values = {r["resourceName"]: [(i["id"], i["payloads"][0]["values"]) for i in r["intervals"]]
              for r in report["resources"]}
    assert values == {"site-a": [(0, [12.345]), (1, [12.345])],
                      "fleet": [(0, [7.0]), (1, [7.0])]}
    (reading,) = vtn3.reports_for(volts)
    assert {r["resourceName"]: r["intervals"][-1]["payloads"][0]["values"]
            for r in reading["resources"]} == {"site-a-L1-min": [221.5],
                                               "site-a-L1-mean": [228.25]}
    await asyncio.sleep(1.5)
    assert len(vtn3.reports_for(event_id)) == 1  # sent once
    assert not run.task.done()


async def test_a_refused_report_is_retried_until_accepted(vtn3, start):
    vtn3.refuse_reports = 2
    event_id = await vtn3.add_event(report_event(vtn3.add_program("P")))
    start(settings(vtn3))
    await wait_until(lambda: vtn3.reports_for(event_id), timeout=30, what="report")
    assert len(vtn3.received.refused_reports) == 2
    assert vtn3.received.refused_reports[0]["resources"] == \
        vtn3.reports_for(event_id)[0]["resources"]


async def test_a_queued_report_survives_a_restart(vtn3, start, tmp_path: Path):
    vtn3.refuse_reports = 1_000
    event_id = await vtn3.add_event(report_event(vtn3.add_program("P")))
    outbox = tmp_path / "reports.db"
    first = start(settings(vtn3), outbox=SqliteOutbox(outbox))
    await wait_until(lambda: vtn3.received.refused_reports, timeout=20, what="a refusal")
    await first.stop()
    refused = vtn3.received.refused_reports[0]
    vtn3.refuse_reports = 0
    second = start(settings(vtn3), Listener(), outbox=SqliteOutbox(outbox),
                   known_events=[(e, "optIn") for e in first.listener.events])
    second.listener.load_w = 0.0  # what it measures now is not what the report said
    await wait_until(lambda: vtn3.reports_for(event_id), timeout=20, what="report after restart")
    (report,) = vtn3.reports_for(event_id)
    assert report["resources"] == refused["resources"]
    assert second.listener.of(event_id) == []  # known from before: not handed on again


async def test_reports_of_3_0_1_carry_the_program(start):
    vtn = Vtn3(port=free_port(), version="3.0.1")
    await vtn.start()
    try:
        program = vtn.add_program("P")
        event_id = await vtn.add_event(report_event(program, aggregate=True))
        start(settings(vtn))
        await wait_until(lambda: vtn.reports_for(event_id), timeout=20, what="report")
        (report,) = vtn.reports_for(event_id)
        assert report["programID"] == program
        assert [r["resourceName"] for r in report["resources"]] == ["AGGREGATED_REPORT"]
    finally:
        await vtn.stop()


async def test_opts_are_local_in_openadr_3(vtn3, start):
    run = start(settings(vtn3))
    await registered(run)
    assert await run.ven.opt_out_of_event("opt-1", "e", 0) is True
    assert await run.ven.cancel_opt("opt-1") is True
    assert not [r for r in vtn3.received.requests if "opt" in r[1].lower()]

"""Local-controller mode: an outage of the operator's CSMS loses nothing.

Stations stay connected to drbridge and keep charging under their DR limits; their
transaction messages are kept in SQLite before they are answered and replayed in order,
once, when the CSMS is back, with 1.6 transaction ids mapped. Time is compressed through
the configuration (short timeouts and backoff).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from conftest import SiteHarness, wait_steered, wait_until
from lc_helpers import add_station201, upstream_config
from test_process import spawn_bridge

from bridge.app import Bridge
from bridge.sim.csms import UpstreamCsms
from bridge.upstream.outage import LOCAL_TX_BASE, QUEUE

KEPT = ("StartTransaction", "StopTransaction", "MeterValues", "StatusNotification",
        "TransactionEvent")


@pytest.fixture
async def csms() -> AsyncIterator[UpstreamCsms]:
    server = UpstreamCsms(id_tags={"ALLOWED": "Accepted", "STOLEN": "Blocked"})
    await server.start()
    yield server
    await server.stop()


def queued(bridge: Bridge, station_id: str) -> list[dict[str, Any]]:
    """The station's queue in order, as stored."""
    assert bridge.upstream is not None
    return list(bridge.upstream.db[QUEUE].rows_where("station_id = ?", [station_id],
                                                     order_by="seq"))


def kept_calls(csms: UpstreamCsms, station_id: str, since: datetime) -> list[tuple[str, Any]]:
    return [(r.action, r.payload) for r in csms.calls(station_id=station_id)
            if r.action in KEPT and r.at >= since]


async def test_16_outage_sessions_queue_and_replay_once_in_order_with_ids_mapped(
        site: SiteHarness, csms: UpstreamCsms):
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    assert bridge.upstream is not None
    station = site.add_station("CP1", id_tag="ALLOWED", meter_interval_s=0.3)
    await wait_steered(bridge, "CP1")
    await csms.wait_for("MeterValues", station_id="CP1")
    assert station.transaction_id == 5000

    await csms.stop(abort=True)  # the operator's CSMS goes away
    outage = datetime.now(UTC)
    await wait_until(lambda: bridge.upstream.links["CP1"].upstream_state == "down",
                     what="the link down")
    # a DR event arrives meanwhile: the station, still connected, is limited as ever
    await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
    site.vtn.add_simple_event(site.vtn.ven_id("test-site") or "", outage,
                              [(timedelta(minutes=10), 2)])
    await wait_until(lambda: station.composite_limit_w() <= 11_000 and
                     station.composite_limit_w(outage + timedelta(minutes=5)) <= 11_000,
                     what="the DR limit during the outage")
    # sessions stop and start; each start gets a local id; meter values flow
    station.unplug()
    await wait_until(lambda: station.transaction_id is None, what="the stop")
    station.plug_in()
    await wait_until(lambda: station.transaction_id == LOCAL_TX_BASE, what="a local id")
    await asyncio.sleep(1)
    station.unplug()
    await wait_until(lambda: station.transaction_id is None, what="the second stop")
    station.plug_in()
    await wait_until(lambda: station.transaction_id == LOCAL_TX_BASE + 1, what="another")
    await asyncio.sleep(1)
    # answered by drbridge meanwhile: a heartbeat, and the cache's answers
    assert "currentTime" in await station.request("Heartbeat", {})
    assert (await station.request("Authorize", {"idTag": "ALLOWED"})) == \
        {"idTagInfo": {"status": "Accepted"}}  # the operator's answer to its start, cached
    assert (await station.request("Authorize", {"idTag": "NOBODY"})) == \
        {"idTagInfo": {"status": "Invalid"}}  # unknown: offline_authorization cache
    kept = queued(bridge, "CP1")
    assert bridge.upstream.backlog("CP1") == len(kept) > 6
    assert station.connected and len(bridge.station_events.sessions) == 1  # drbridge read it all

    back = datetime.now(UTC)
    await csms.start()
    await wait_until(lambda: bridge.upstream.backlog("CP1") == 0, timeout=20,
                     what="the replay")
    replayed = kept_calls(csms, "CP1", back)[:len(kept)]
    # every kept message once, in order, as the station sent it but for the ids mapped
    mapping = {5000: 5000, LOCAL_TX_BASE: 5001, LOCAL_TX_BASE + 1: 5002}
    expected = []
    for row in kept:
        payload = json.loads(row["payload"])
        if "transactionId" in payload:
            payload["transactionId"] = mapping[payload["transactionId"]]
        expected.append((row["action"], payload))
    assert replayed == expected
    # each delivered at the first attempt: none went out before, none twice
    assert {(row["state"], row["attempts"]) for row in queued(bridge, "CP1")} == {("acked", 1)}
    assert [p["idTag"] for a, p in replayed if a == "StartTransaction"] == ["ALLOWED"] * 2
    assert csms.transactions[5001][0] == "CP1" and csms.transactions[5002][0] == "CP1"
    # live again: the running session's messages go up under the operator's id
    live = len(csms.calls("MeterValues", "CP1"))
    await csms.wait_for("MeterValues", live + 2, station_id="CP1")
    assert csms.calls("MeterValues", "CP1")[-1].payload["transactionId"] == 5002
    # and the operator's calls about it reach the station under the id the station knows
    assert (await csms.request("CP1", "RemoteStopTransaction", {"transactionId": 5002})
            )["status"] == "Accepted"
    await wait_until(lambda: any(r.payload["transactionId"] == 5002
                                 for r in csms.calls("StopTransaction", "CP1")),
                     what="the remote stop")
    await wait_until(lambda: not bridge.station_events.sessions, what="drbridge reading the stop")
    starts = [r.payload for r in csms.calls("StartTransaction", "CP1")]
    assert len(starts) == 3  # the first, live, and two replayed: none twice


async def test_201_outage_transaction_events_replayed_once_in_order(
        site: SiteHarness, csms: UpstreamCsms):
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    assert bridge.upstream is not None
    station = add_station201(site, "EV1", id_tag="ALLOWED", meter_interval_s=0.3)
    await wait_steered(bridge, "EV1")
    await csms.wait_for("TransactionEvent", 2, station_id="EV1")
    await csms.stop(abort=True)
    await wait_until(lambda: bridge.upstream.links["EV1"].upstream_state == "down",
                     what="the link down")
    station.unplug()
    await wait_until(lambda: station.transaction_id is None, what="the end")
    station.plug_in()
    await wait_until(lambda: station.transaction_id == "EV1-tx2", what="the next start")
    await wait_until(lambda: bridge.upstream.backlog("EV1") >= 6, what="events kept")
    assert len(bridge.station_events.sessions) == 1 and station.id_token_answers[-1] == "Accepted"
    back = datetime.now(UTC)
    await csms.start()
    await wait_until(lambda: bridge.upstream.backlog("EV1") == 0, timeout=20,
                     what="the replay")
    seq_nos = [p["seqNo"] for a, p in kept_calls(csms, "EV1", back) if a == "TransactionEvent"]
    assert seq_nos == sorted(seq_nos) and len(seq_nos) == len(set(seq_nos))
    everything = [r.payload["seqNo"] for r in csms.calls("TransactionEvent", "EV1")]
    assert len(everything) == len(set(everything))  # nothing twice
    events = [r.payload["eventType"] for r in csms.calls("TransactionEvent", "EV1")]
    assert events.count("Started") == 2 and events.count("Ended") == 1


@pytest.mark.parametrize(("policy", "known", "unknown", "blocked"), [
    ("cache", "Accepted", "Invalid", "Blocked"),
    ("accept", "Accepted", "Accepted", "Blocked"),
    ("reject", "Invalid", "Invalid", "Invalid"),
])
async def test_offline_authorization_policies(site: SiteHarness, csms: UpstreamCsms, policy: str,
                                              known: str, unknown: str, blocked: str):
    bridge = await site.start_bridge(
        ocpp_extra=upstream_config(csms, offline_authorization=policy))
    station = site.add_station("CP1", plugged_in=False)
    await wait_steered(bridge, "CP1")
    # the operator's answers while it is there, refusals too, are learnt
    assert (await station.request("Authorize", {"idTag": "ALLOWED"}))["idTagInfo"] == \
        {"status": "Accepted"}
    assert (await station.request("Authorize", {"idTag": "STOLEN"}))["idTagInfo"] == \
        {"status": "Blocked"}
    await csms.stop(abort=True)
    answers = {tag: (await station.request("Authorize", {"idTag": tag}))["idTagInfo"]["status"]
               for tag in ("ALLOWED", "NOBODY", "STOLEN")}
    assert answers == {"ALLOWED": known, "NOBODY": unknown, "STOLEN": blocked}


async def test_an_authorize_waits_for_the_operator_coming_back(
        site: SiteHarness, csms: UpstreamCsms):
    """Never decide alone while the operator may answer: with offline_authorization
    accept, an unknown id arriving while the link is down but the CSMS is back gets the
    CSMS's refusal."""
    bridge = await site.start_bridge(ocpp_extra=upstream_config(
        csms, offline_authorization="accept", call_timeout_s=3, reconnect_min_s=5,
        reconnect_max_s=5))
    assert bridge.upstream is not None
    station = site.add_station("CP1", plugged_in=False)
    await wait_steered(bridge, "CP1")
    await csms.stop(abort=True)
    await wait_until(lambda: bridge.upstream.links["CP1"].upstream_state == "down",
                     what="the link down")
    await csms.start()  # back, but drbridge would not try again for 5 s
    answer = await station.request("Authorize", {"idTag": "NOBODY"})
    assert answer == {"idTagInfo": {"status": "Invalid"}}
    assert csms.calls("Authorize", "CP1")[-1].payload == {"idTag": "NOBODY"}


async def test_a_boot_during_the_outage_goes_first_and_pending_holds_the_replay(
        site: SiteHarness, csms: UpstreamCsms, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    assert bridge.upstream is not None
    station = site.add_station("CP1", id_tag="ALLOWED", meter_interval_s=0.3)
    await wait_steered(bridge, "CP1")
    await csms.wait_for("MeterValues", station_id="CP1")
    await csms.stop(abort=True)
    await wait_until(lambda: bridge.upstream.links["CP1"].upstream_state == "down",
                     what="the link down")
    await station.reboot()  # its session ends; it boots again, answered by drbridge
    await wait_until(lambda: station.transaction_id == LOCAL_TX_BASE, what="a new session")
    await wait_steered(bridge, "CP1")
    backlog = bridge.upstream.backlog("CP1")
    assert backlog > 0
    csms.boot_status = "Pending"
    back = datetime.now(UTC)
    await csms.start()
    await csms.wait_for("BootNotification", 2, station_id="CP1")
    await asyncio.sleep(1)
    # the operator has not accepted the station: nothing of its queue went up
    assert kept_calls(csms, "CP1", back) == []
    assert bridge.upstream.links["CP1"].upstream_state == "replaying"
    csms.boot_status = "Accepted"
    await wait_until(lambda: bridge.upstream.backlog("CP1") == 0, timeout=20,
                     what="the replay")
    after = [r.action for r in csms.calls(station_id="CP1") if r.at >= back]
    first_kept = min(i for i, a in enumerate(after) if a in KEPT)
    assert after[:first_kept].count("BootNotification") >= 2
    assert "its queue waits" in caplog.text
    assert len(csms.calls("StartTransaction", "CP1")) == 2  # the first, and the replayed


async def test_a_replayed_start_the_operator_refuses_ends_the_session(
        site: SiteHarness, csms: UpstreamCsms, caplog: pytest.LogCaptureFixture):
    bridge = await site.start_bridge(
        ocpp_extra=upstream_config(csms, offline_authorization="accept"))
    assert bridge.upstream is not None
    station = site.add_station("CP1", id_tag="NOBODY", plugged_in=False, meter_interval_s=0.3)
    await wait_steered(bridge, "CP1")
    await csms.stop(abort=True)
    await wait_until(lambda: bridge.upstream.links["CP1"].upstream_state == "down",
                     what="the link down")
    station.plug_in()  # an id the operator has never answered: accepted offline
    await wait_until(lambda: station.transaction_id == LOCAL_TX_BASE, what="the session")
    await asyncio.sleep(0.5)
    assert station.transaction_id == LOCAL_TX_BASE
    await csms.start()
    # the operator refuses the id when the start is replayed: drbridge ends the session,
    # as a station with StopTransactionOnInvalidId does
    stop = await csms.wait_for("StopTransaction", station_id="CP1", timeout=20)
    assert stop[0].payload["transactionId"] == 5000 and stop[0].payload["reason"] == "Remote"
    assert station.transaction_id is None
    assert "refused the id of transaction 2100000000 started offline" in caplog.text


async def test_an_answer_that_does_not_come_in_time_is_given_by_drbridge_and_sent_again(
        site: SiteHarness, csms: UpstreamCsms, caplog: pytest.LogCaptureFixture):
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    assert bridge.upstream is not None
    station = site.add_station("CP1", id_tag="ALLOWED", meter_interval_s=0.3)
    await wait_steered(bridge, "CP1")
    await csms.wait_for("MeterValues", station_id="CP1")
    csms.hold("MeterValues")  # the CSMS stalls
    try:
        stalled = len(csms.calls("MeterValues", "CP1"))
        await csms.wait_for("MeterValues", stalled + 1, station_id="CP1")
        # drbridge answers the station after its upstream timeout, queues it, and opens the
        # link again; the message goes once more (the operator may have it: at-least-once)
        await wait_until(lambda: bridge.upstream is not None and (
            bridge.upstream.backlog("CP1") > 0 or "goes upstream again" in caplog.text),
            timeout=10, what="the stalled message queued")
    finally:
        csms.release("MeterValues")
    await wait_until(lambda: "goes upstream again" in caplog.text, timeout=20,
                     what="the message sent again")
    await wait_until(lambda: bridge.upstream.backlog("CP1") == 0, timeout=20,
                     what="the replay")
    assert station.connected and station.transaction_id == 5000


async def test_an_operator_refusing_the_stations_credentials_keeps_the_station(
        site: SiteHarness, csms: UpstreamCsms):
    """The station's Authorization header goes upstream; a 401 there leaves the station
    connected to drbridge under its DR limit, and drbridge tries again."""
    csms.passwords = {"CP1": "right-password"}
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    assert bridge.upstream is not None
    station = site.add_station("CP1", plugged_in=False)
    token = base64.b64encode(b"CP1:wrong-password").decode()
    station.connect_options = {"additional_headers": {"Authorization": f"Basic {token}"}}
    await wait_steered(bridge, "CP1")
    await wait_until(lambda: csms.refused_logins >= 2, what="retries refused")
    assert station.connected and bridge.upstream.links["CP1"].upstream_state == "down"
    assert bridge.upstream.links["CP1"].upstream.refused_login
    assert csms.calls(station_id="CP1") == []
    csms.passwords = {"CP1": "wrong-password"}  # the operator's records are corrected
    await wait_until(lambda: bridge.upstream.links["CP1"].upstream_state == "up",
                     what="the link up with the station's credentials")


def queue_rows(db: Any) -> list[tuple[int, str, str, str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT seq, action, payload, state, attempts FROM {QUEUE}"
                            " WHERE station_id = 'CP1' ORDER BY seq").fetchall()


@pytest.mark.xdist_group("heavy")  # see the Makefile
async def test_kill_9_during_an_outage_loses_nothing_and_replays_exactly_once(
        site: SiteHarness, csms: UpstreamCsms):
    """A real ``drbridge run`` killed with SIGKILL while the CSMS is away: restarted, its
    queue is intact and each message reaches the CSMS once, in order, ids mapped."""
    site.write_config(ocpp_extra=upstream_config(csms))
    db = site.tmp_path / "var" / "bridge.db"
    process = await spawn_bridge(site.config_path)
    try:
        station = site.add_station("CP1", id_tag="ALLOWED", meter_interval_s=0.3)
        await csms.wait_for("MeterValues", station_id="CP1", timeout=30)
        assert station.transaction_id == 5000
        await csms.stop(abort=True)
        station.unplug()
        await wait_until(lambda: station.transaction_id is None, what="the stop")
        station.plug_in()
        await wait_until(lambda: station.transaction_id == LOCAL_TX_BASE, timeout=20,
                         what="a session begun offline")
        await wait_until(lambda: len(queue_rows(db)) >= 8, timeout=20, what="messages kept")
    finally:
        process.kill()  # mid-outage, no chance to save anything more
        await process.wait()
    kept = queue_rows(db)
    assert {state for *_, state, _ in kept} == {"queued"}  # none had gone out
    await station.drop_connection()

    back = datetime.now(UTC)
    await csms.start()
    process = await spawn_bridge(site.config_path)
    try:
        await wait_until(lambda: {r[3] for r in queue_rows(db)[:len(kept)]} == {"acked"},
                         timeout=30, what="the replay after the restart")
        # the queue as it was, each message once, in order, at its first attempt
        assert [r[:3] for r in queue_rows(db)[:len(kept)]] == [r[:3] for r in kept]
        assert [r[4] for r in queue_rows(db)[:len(kept)]] == [1] * len(kept)
        mapping = {5000: 5000, LOCAL_TX_BASE: 5001}
        expected = []
        for _, action, text, _, _ in kept:
            payload = json.loads(text)
            if "transactionId" in payload:
                payload["transactionId"] = mapping[payload["transactionId"]]
            expected.append((action, payload))
        assert kept_calls(csms, "CP1", back)[:len(kept)] == expected
        for action, payload in expected:
            assert sum(1 for r in csms.calls(action, "CP1") if r.payload == payload) == 1
        assert len(csms.calls("StartTransaction", "CP1")) == 2
    except AssertionError:
        print((site.tmp_path / "bridge.log").read_text())
        raise
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0


async def test_the_operator_sees_the_outage_and_the_queue_on_the_api_and_metrics(
        site: SiteHarness, csms: UpstreamCsms):
    """While the CSMS is away the API and /metrics show the link down and the messages
    waiting (site-wide and per station), then the replay draining them."""
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    station = site.add_station("CP1", id_tag="ALLOWED", meter_interval_s=0.3)
    await wait_steered(bridge, "CP1")
    await wait_until(lambda: station.transaction_id == 5000, what="the operator's transaction")
    assert bridge.web is not None
    url = f"http://127.0.0.1:{bridge.web.port}"

    async def read() -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/api/site") as response:
                upstream = (await response.json())["upstream"]
            async with http.get(f"{url}/api/stations") as response:
                [row] = [r["upstream"] for r in (await response.json())["stations"]
                         if r["station_id"] == "CP1"]
            async with http.get(f"{url}/metrics") as response:
                metrics = {name: float(value) for name, _, value in (
                    line.rpartition(" ") for line in (await response.text()).splitlines()
                    if line.startswith("drbridge_upstream_"))}
        return upstream, row, metrics

    await csms.stop(abort=True)
    await wait_until(lambda: bridge.view.upstream() is not None
                     and bridge.view.upstream().links == {"down": 1}, what="the link down")
    station.unplug()  # its StopTransaction and the connector's status are kept meanwhile
    await wait_until(lambda: bridge.view.upstream().queue >= 2, what="messages kept")
    upstream, row, metrics = await read()
    # (each read a moment after the other: the station may have sent more meanwhile)
    assert upstream["links"] == {"down": 1} and upstream["queue"] >= 2
    assert row["link"] == "down" and row["queue"] >= 2
    assert metrics['drbridge_upstream_links{state="down"}'] == 1
    assert metrics["drbridge_upstream_queue_length"] >= 2

    await csms.start()
    await wait_until(lambda: bridge.view.upstream().queue == 0
                     and bridge.view.upstream().links == {"up": 1}, timeout=20,
                     what="the replay")
    upstream, row, metrics = await read()
    assert upstream["links"] == {"up": 1} and upstream["queue"] == 0
    assert row["link"] == "up" and row["queue"] == 0
    assert metrics["drbridge_upstream_queue_length"] == 0
    assert metrics['drbridge_upstream_links{state="up"}'] == 1


async def test_a_minute_long_outage_with_sessions_starting_and_stopping_replays_exactly(
        site: SiteHarness, csms: UpstreamCsms):
    """The operator's CSMS is down for a full minute (not compressed: the server stopped,
    every link refused) while two stations stop and start sessions. When it is back, each
    station's messages reach it once, in order, as sent, with drbridge's local transaction
    ids replaced by the ones the CSMS itself gave out on the replayed starts. The test
    mostly waits: about 75 s of wall time, little CPU."""
    outage_s = 60.0
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms, reconnect_max_s=2))
    assert bridge.upstream is not None
    upstream = bridge.upstream
    cp1 = site.add_station("CP1", id_tag="ALLOWED", meter_interval_s=4)
    cp2 = site.add_station("CP2", id_tag="ALLOWED", meter_interval_s=4)
    await wait_steered(bridge, "CP1", "CP2")
    for station_id in ("CP1", "CP2"):
        await csms.wait_for("MeterValues", station_id=station_id)
    live = {cp1.transaction_id, cp2.transaction_id}
    assert live == {5000, 5001}
    given_before = set(csms.transactions)

    loop = asyncio.get_running_loop()
    await csms.stop(abort=True)
    down_at = loop.time()
    await wait_until(lambda: upstream.link_states() == {"down": 2}, what="both links down")

    async def at(offset_s: float) -> None:
        await asyncio.sleep(max(0.0, down_at + offset_s - loop.time()))

    # during the minute: CP1 stops, starts, stops and starts again; CP2 stops and starts
    for offset_s, station, plugged, what in (
            (5, cp1, False, "CP1's first stop"), (12, cp1, True, "CP1's second session"),
            (20, cp2, False, "CP2's stop"), (28, cp2, True, "CP2's second session"),
            (38, cp1, False, "CP1's second stop"), (46, cp1, True, "CP1's third session")):
        await at(offset_s)
        if plugged:
            station.plug_in()
        else:
            station.unplug()
        await wait_until(lambda s=station, p=plugged: (s.transaction_id is not None) == p,
                         what=what)
    assert min(cp1.transaction_id or 0, cp2.transaction_id or 0) >= LOCAL_TX_BASE  # drbridge's
    await at(outage_s)
    # still down after the whole minute: all of it is kept
    assert upstream.link_states() == {"down": 2}
    kept = {sid: queued(bridge, sid) for sid in ("CP1", "CP2")}
    assert [r["action"] for r in kept["CP1"]].count("StartTransaction") == 2
    assert [r["action"] for r in kept["CP2"]].count("StartTransaction") == 1
    assert [r["action"] for r in kept["CP1"]].count("StopTransaction") == 2
    assert [r["action"] for r in kept["CP2"]].count("StopTransaction") == 1
    assert all(upstream.backlog(sid) == len(rows) for sid, rows in kept.items())

    back = datetime.now(UTC)
    await csms.start()
    assert loop.time() - down_at >= outage_s
    await wait_until(lambda: upstream.backlog("CP1") == upstream.backlog("CP2") == 0,
                     timeout=30, what="the replay")

    for station_id, rows in kept.items():
        # the ids the CSMS gave this station's replayed starts, in the order it gave them
        given = sorted(t for t, (sid, _, _) in csms.transactions.items()
                       if sid == station_id and t not in given_before)
        local_ids = [row["local_tx"] for row in rows if row["action"] == "StartTransaction"]
        assert len(given) == len(local_ids)
        mapping = dict(zip(local_ids, given, strict=True)) | {t: t for t in live}
        expected = []
        for row in rows:
            payload = json.loads(row["payload"])
            if "transactionId" in payload:
                payload["transactionId"] = mapping[payload["transactionId"]]
            expected.append((row["action"], payload))
        # what the CSMS received after it came back: the kept messages first, each once,
        # in the order the station sent them, ids mapped; every id one the CSMS gave this
        # station
        replayed = kept_calls(csms, station_id, back)[:len(rows)]
        assert replayed == expected
        assert {(row["state"], row["attempts"]) for row in queued(bridge, station_id)} == \
            {("acked", 1)}
        for _, payload in replayed:
            if "transactionId" in payload:
                assert csms.transactions[payload["transactionId"]][0] == station_id
    # live again: the sessions running since the outage report under the CSMS's ids
    for station, station_id in ((cp1, "CP1"), (cp2, "CP2")):
        count = len(csms.calls("MeterValues", station_id))
        await csms.wait_for("MeterValues", count + 1, station_id=station_id, timeout=15)
        last = csms.calls("MeterValues", station_id)[-1].payload["transactionId"]
        assert csms.transactions[last][0] == station_id and last not in live
        assert station.transaction_id is not None and station.transaction_id >= LOCAL_TX_BASE
    starts = csms.calls("StartTransaction")
    assert len(starts) == 2 + 3  # two live before the outage, three replayed: none twice
    # and no id of drbridge's own ever reached the CSMS
    assert all(r.payload.get("transactionId", 0) < LOCAL_TX_BASE for r in csms.calls())

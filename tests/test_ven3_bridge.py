"""The OpenADR 3 VEN in the bridge's place for the 2.0b one: a utility's import cap reaches
the stations, and its deletion lifts it. The bridge is built as usual and handed the 3.x VEN
(what ``ven.protocol: "3"`` will select), so this checks that both VENs are one interface."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from conftest import SiteHarness, wait_until
from test_end_to_end import start_fleet

from bridge.app import Bridge
from bridge.sim.vtn import free_port
from bridge.sim.vtn3 import Vtn3, iso
from bridge.store import Store
from ven.interface import VenDriver, VenListener
from ven.oadr3.outbox import SqliteOutbox
from ven.oadr3.settings import Ven3Settings
from ven.oadr3.ven import Ven3


async def test_an_import_cap_from_an_openadr_3_vtn_holds_at_the_stations(site: SiteHarness):
    vtn3 = Vtn3(port=free_port())
    await vtn3.start()
    try:
        config = site.write_config(capacity_kw=44)
        settings = Ven3Settings(
            vtn_url=vtn3.url, ven_name="test-site", resource_id=config.resource_id,
            client_id="site-a", client_secret="secret-a",
            poll_interval=timedelta(seconds=0.5), retry_initial=timedelta(milliseconds=100),
            retry_max=timedelta(seconds=1))

        def openadr_3(listener: VenListener, store: Store) -> VenDriver:
            return Ven3(settings, listener, state=store, outbox=SqliteOutbox(store.db))

        bridge = Bridge(config, ven=openadr_3)
        site.bridge = bridge
        site._bridge_task = asyncio.create_task(bridge.run())
        stations = await start_fleet(site, ["Current", "Power", "Current", "Power"])
        await wait_until(lambda: sum(s.power_w for s in stations) > 30_000, timeout=30,
                         what="charging at full power")
        program = vtn3.add_program("grid-aware-charging")
        start = datetime.now(UTC).replace(microsecond=0)
        event_id = await vtn3.add_event({
            "programID": program,
            "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR",
                                    "payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
            "intervalPeriod": {"start": iso(start), "duration": "PT1H"},
            "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT",
                                                  "values": [18]}]}]})
        # the stations' own draw is the judge
        await wait_until(lambda: 0 < sum(s.power_w for s in stations) <= 18_000, timeout=30,
                         what="the stations under the 18 kW import cap")
        assert bridge.dr.events[event_id].opt == "optIn"
        assert "IMPORT_CAPACITY_LIMIT" in bridge.dr.events[event_id].opt_reason
        await vtn3.delete_event(event_id)
        await wait_until(lambda: sum(s.power_w for s in stations) > 30_000, timeout=60,
                         what="full power once the cap is deleted")
        assert bridge.ven.registration is not None and bridge.ven.last_contact is not None
    finally:
        await site.close()
        await vtn3.stop()

"""The OpenADR 2.0b VEN: registration, polling, events and the telemetry report.

Built on ``openleadr.OpenADRClient``. openleadr's own ``run()`` gives up for
good when the first registration fails; a gateway must not, so this module
drives the same steps itself with a retry loop, and hands every event on as a
typed :class:`~ven.events.DrEvent`. It knows nothing of chargers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, Literal, Protocol

from lxml import etree
from openleadr import OpenADRClient, utils
from openleadr.messaging import validate_xml_signature

from ven.events import DrEvent, InvalidEvent, OptType, normalise_event
from ven.messages import RefusedMessage, read_message

log = logging.getLogger(__name__)

_NO_ENTITIES = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
TELEMETRY_REPORT_ID = "drbridge-telemetry-usage"
SITE_POWER_RID = "site-real-power"


# ei:optReason values (OpenADR 2.0b OptReasonEnumeratedType, without the x- extension).
OptReason = Literal["economic", "emergency", "mustRun", "notParticipating", "outageRunStatus",
                    "overrideStatus", "participating", "x-schedule"]


@dataclass(frozen=True)
class Window:
    """A period of time, as in an xcal:vavailability component."""

    start: datetime
    duration: timedelta


@dataclass(frozen=True)
class Registration:
    ven_id: str
    registration_id: str


@dataclass(frozen=True)
class VenSettings:
    vtn_url: str
    ven_name: str
    resource_id: str  # the site, as named in reports
    telemetry_interval: timedelta = timedelta(seconds=60)
    retry_initial: timedelta = timedelta(seconds=1)
    retry_max: timedelta = timedelta(seconds=60)


class VenListener(Protocol):
    """What the VEN needs from the rest of the gateway."""

    async def on_event(self, event: DrEvent) -> OptType:
        """Decide on and persist an event; called before the VTN gets our answer."""
        ...

    def on_registration(self, registration: Registration) -> None: ...

    def measured_load_w(self) -> float: ...


class _Client(OpenADRClient):
    """openleadr's client, with drbridge's intake for what the VTN answers.

    openleadr checks the XSD only; :func:`ven.messages.read_message` also refuses
    oversize and entity-bearing payloads and content that makes no sense, and
    it never raises anything but :class:`RefusedMessage`.
    """

    last_contact: datetime | None = None

    async def _perform_request(self, service: str, message: Any) -> tuple[str | None, dict]:
        await self._ensure_client_session()
        url = f"{self.vtn_url}/{service}"
        try:
            async with self.client_session.post(url, data=message) as reply:
                status, content = reply.status, await reply.read()
        except Exception as error:  # unreachable VTN, reset, timeout: retried by the caller
            log.warning("VTN %s unreachable: %s: %s", url, type(error).__name__, error)
            return None, {}
        if status != HTTPStatus.OK:
            log.warning("VTN answered %s with HTTP %d", service, status)
            return None, {}
        if not content:
            return None, {}
        try:
            if self.vtn_fingerprint:
                validate_xml_signature(etree.fromstring(content, parser=_NO_ENTITIES),
                                       cert_fingerprint=self.vtn_fingerprint)
            message_type, payload = read_message(content)
        except RefusedMessage as error:
            log.error("refused a message from the VTN: %s", error.reason)
            return None, {}
        except Exception as error:  # a signature that does not verify
            log.error("refused a message from the VTN: %s: %s", type(error).__name__, error)
            return None, {}
        self.last_contact = datetime.now(UTC)
        code = (payload.get("response") or {}).get("response_code")
        if code not in (None, 200):
            log.warning("VTN answered %s with OpenADR status %s", message_type, code)
        return message_type, payload


def backoff_delays(initial: float, maximum: float, rng: random.Random) -> Callable[[], float]:
    """Exponential backoff with full jitter, so many VENs do not retry in lockstep."""
    attempt = 0

    def next_delay() -> float:
        nonlocal attempt
        ceiling = min(maximum, initial * 2**attempt)
        attempt += 1
        return rng.uniform(ceiling / 2, ceiling)

    return next_delay


class Ven:
    def __init__(
        self,
        settings: VenSettings,
        listener: VenListener,
        registration: Registration | None = None,
    ) -> None:
        self._settings = settings
        self._listener = listener
        self._client = _Client(
            ven_name=settings.ven_name,
            vtn_url=settings.vtn_url,
            ven_id=registration.ven_id if registration else None,
            show_fingerprint=False,
        )
        self._client.add_handler("on_event", self._handle_event)
        self._client.add_handler("on_update_event", self._handle_event)
        self._client.add_report(
            callback=listener.measured_load_w,
            resource_id=settings.resource_id,
            measurement="REAL_POWER",
            unit="W",
            scale="none",
            sampling_rate=settings.telemetry_interval,
            report_specifier_id=TELEMETRY_REPORT_ID,
            r_id=SITE_POWER_RID,
            report_duration=timedelta(hours=1),
        )
        self._stopped = asyncio.Event()
        self._vtn_id = ""
        self._client.add_hook("after_parse_xml", self._remember_vtn_id)

    @property
    def registration(self) -> Registration | None:
        client = self._client
        if client.ven_id and client.registration_id:
            return Registration(client.ven_id, client.registration_id)
        return None

    @property
    def last_contact(self) -> datetime | None:
        return self._client.last_contact

    async def run(self) -> None:
        """Register (retrying for as long as it takes), then poll until :meth:`stop`."""
        client = self._client
        client.loop = asyncio.get_running_loop()
        delay = backoff_delays(
            self._settings.retry_initial.total_seconds(),
            self._settings.retry_max.total_seconds(),
            random.Random(),
        )
        while not self._stopped.is_set():
            if await self._register():
                break
            wait = delay()
            log.warning("registration with %s failed; retrying in %.1f s",
                        self._settings.vtn_url, wait)
            await self._sleep(wait)
        if self._stopped.is_set():
            return
        registration = self.registration
        assert registration is not None
        self._listener.on_registration(registration)
        await client.register_reports(client.reports)
        client.report_queue_task = asyncio.create_task(client._report_queue_worker())
        await client.sync_events()
        await client._poll()
        poll_seconds = min(client.poll_frequency, timedelta(hours=24)).total_seconds()
        client.scheduler.add_job(client._poll, trigger="interval", seconds=poll_seconds)
        client.scheduler.start()
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
        client = self._client
        if client.scheduler.running:
            client.scheduler.shutdown(wait=False)
        if client.report_queue_task:
            client.report_queue_task.cancel()
        if client.client_session is not None:
            await client.client_session.close()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _register(self) -> bool:
        client = self._client
        try:
            _, reply = await client.query_registration()
            request_id = ((reply or {}).get("response") or {}).get("request_id")
            await client.create_party_registration(ven_id=client.ven_id, request_id=request_id)
        except Exception:  # openleadr raises on replies it cannot digest; keep trying
            log.exception("registration attempt failed")
            return False
        return client.registration_id is not None

    def _remember_vtn_id(self, message_type: str, payload: dict[str, Any]) -> None:
        if isinstance(payload, dict) and payload.get("vtn_id"):
            self._vtn_id = str(payload["vtn_id"])

    # EiOpt ----------------------------------------------------------------------------------
    async def opt_out_of_event(self, opt_id: str, event_id: str, modification_number: int,
                               reason: OptReason = "notParticipating",
                               market_context: str | None = None) -> bool:
        """Tell the VTN (oadrCreateOpt) that the site no longer takes part in an event.

        True once the VTN acknowledged ``opt_id``. The caller keeps ``opt_id`` so that a
        retry after a restart is the same opt, not a second one.
        """
        return await self._create_opt(
            opt_id, "optOut", reason, market_context=market_context,
            event_id=event_id, modification_number=modification_number,
        )

    async def declare_unavailable(self, opt_id: str, windows: list[Window],
                                  reason: OptReason = "notParticipating",
                                  market_context: str | None = None) -> bool:
        """Send an availability schedule (oadrCreateOpt, optOut with an xcal:vavailability):
        during ``windows`` the site cannot take part in events. True once acknowledged."""
        if not windows:
            raise ValueError("an unavailability opt needs at least one window")
        vavailability = {"components": [{"dtstart": w.start.astimezone(UTC),
                                         "duration": w.duration} for w in windows]}
        return await self._create_opt(opt_id, "optOut", reason, market_context=market_context,
                                      vavailability=vavailability)

    async def cancel_opt(self, opt_id: str) -> bool:
        """Withdraw an opt sent before (oadrCancelOpt). True once the VTN acknowledged it."""
        client = self._client
        if not client.ven_id:
            return False
        message = client._create_message("oadrCancelOpt", request_id=utils.generate_id(),
                                         opt_id=opt_id, ven_id=client.ven_id)
        message_type, payload = await client._perform_request("EiOpt", message)
        return self._acknowledged("oadrCanceledOpt", opt_id, message_type, payload)

    async def _create_opt(self, opt_id: str, opt_type: OptType, reason: OptReason,
                          **fields: Any) -> bool:
        client = self._client
        if not client.ven_id:
            return False  # not registered yet: the caller retries later
        message = client._create_message(
            "oadrCreateOpt", request_id=utils.generate_id(), ven_id=client.ven_id,
            opt_id=opt_id, opt_type=opt_type, opt_reason=reason,
            created_date_time=datetime.now(UTC),
            targets=[{"ven_id": client.ven_id}], **fields,
        )
        message_type, payload = await client._perform_request("EiOpt", message)
        return self._acknowledged("oadrCreatedOpt", opt_id, message_type, payload)

    @staticmethod
    def _acknowledged(expected: str, opt_id: str, message_type: str | None,
                      payload: dict[str, Any]) -> bool:
        code = (payload.get("response") or {}).get("response_code")
        if message_type != expected or code is None or not 200 <= code < 300:
            log.warning("VTN did not acknowledge opt %s (%s, status %s)", opt_id,
                        message_type, code)
            return False
        if str(payload.get("opt_id")) != opt_id:
            log.warning("VTN acknowledged opt %s instead of %s", payload.get("opt_id"), opt_id)
            return False
        return True

    async def _handle_event(self, raw: dict[str, Any]) -> OptType:
        try:
            event = normalise_event(raw, vtn_id=self._vtn_id)
        except InvalidEvent as error:
            log.error("refusing event: %s", error)
            return "optOut"
        return await self._listener.on_event(event)



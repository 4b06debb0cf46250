"""The OpenADR 2.0b VEN: registration, polling, events, opts and reports.

Built on ``openleadr.OpenADRClient``. openleadr's own ``run()`` gives up for
good when the first registration fails, and its event handling keeps no state
across restarts; a gateway must do better, so this module drives the steps
itself: registration retried with backoff (and redone when the VTN asks or
cancels it), polling, the event lifecycle of :mod:`ven.oadr20b.lifecycle`, targeting,
randomisation, and every event handed on as a typed :class:`~policies.events.DrEvent`.
It knows nothing of chargers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, Final

import aiohttp
from openleadr import OpenADRClient, objects, utils
from openleadr import messaging as openleadr_messaging

from policies.events import DrEvent, EventStatus, OptType
from ven.interface import OptReason, Registration, VenListener, VenState, Window
from ven.oadr20b.grid_reports import offer_voltage_reports
from ven.oadr20b.lifecycle import Change, SiteTargets, classify, match_targets
from ven.oadr20b.messages import (
    MAX_MESSAGE_BYTES,
    BadEvent,
    RefusedMessage,
    parse_untrusted,
    read_message,
    sort_events,
)
from ven.oadr20b.reports import (
    HISTORY_ID,
    HISTORY_RID,
    UPDATE_REPORT_TEMPLATE,
    install_templates,
    offer_reports,
    update_report_payload,
)
from ven.oadr20b.signatures import canonical_pin, fingerprint_matches, signed_payload
from ven.shared import (
    MemoryState,
    backoff_delays,
    implicitly_cancelled,
    is_loopback_url,
    random_offset,
)

log = logging.getLogger(__name__)

# eiResponse code for an event the VEN cannot read: OpenADR 2.0b's application-layer
# "Invalid data" (4xx: the request cannot be fulfilled; 454 narrows it to its content).
EVENT_INVALID: Final = 454
# Chunks in which a VTN's reply is read, so that one over MAX_MESSAGE_BYTES is stopped early.
_READ_CHUNK = 64 * 1024


# OpenADR 2.0b names two TLS 1.2 suites a VTN must offer: ECDHE-ECDSA and plain RSA key
# exchange, both AES-128-CBC-SHA256. Python's default list lacks the RSA one, which a VTN
# with an RSA certificate may insist on; both are added after the forward-secret AEAD suites.
OPENADR_CIPHERS = ":".join((
    "ECDHE+AESGCM", "ECDHE+CHACHA20",
    "ECDHE-ECDSA-AES128-SHA256", "AES128-SHA256",
    "!aNULL", "!eNULL",
))

@dataclass(frozen=True)
class TlsSettings:
    """Transport security towards the VTN (OpenADR 2.0b: TLS 1.2 with client certificates)."""

    cert: str | None = None  # the VEN's client certificate (PEM); also signs when signing
    key: str | None = None
    passphrase: str | None = None
    ca_file: str | None = None  # CAs the VTN's server certificate must chain to
    vtn_fingerprint: str | None = None  # pin of the VTN's TLS certificate
    check_hostname: bool = True
    xml_signatures: bool = False  # sign what we send, and require valid signed replies
    vtn_signing_fingerprint: str | None = None  # pin of the VTN's signing certificate

    def __post_init__(self) -> None:
        # Pins are held in one form (ven.oadr20b.signatures.canonical_pin), whatever the operator
        # wrote; a pin that is no fingerprint at all raises ValueError here, at config load.
        for name in ("vtn_fingerprint", "vtn_signing_fingerprint"):
            pin = getattr(self, name)
            if pin is not None:
                object.__setattr__(self, name, canonical_pin(pin))

    @property
    def signing_pin(self) -> str | None:
        """The pin VTN signatures are checked against, when signatures are on."""
        if not self.xml_signatures:
            return None
        return self.vtn_signing_fingerprint or self.vtn_fingerprint


def transport_warnings(url: str, tls: TlsSettings | None) -> list[str]:
    """What is unsafe about how the VEN would talk to this VTN."""
    if is_loopback_url(url):
        return []
    if not url.startswith("https://"):
        return [f"the VTN {url} is not on this machine and is reached WITHOUT TLS: anyone on "
                "the path can read and forge DR events; use https:// with ven.tls"]
    problems = []
    if tls is None or not tls.cert:
        problems.append("no client certificate (ven.tls.cert/key): OpenADR 2.0b requires "
                        "mutual TLS")
    if tls is None or not (tls.vtn_fingerprint or tls.ca_file):
        problems.append("the VTN's certificate is checked against the system CAs only "
                        "(set ven.tls.ca_file or ven.tls.vtn_fingerprint)")
    return problems


@dataclass(frozen=True)
class VenSettings:
    vtn_url: str
    ven_name: str
    resource_id: str  # the site, as named in reports
    telemetry_interval: timedelta = timedelta(seconds=60)
    retry_initial: timedelta = timedelta(seconds=1)
    retry_max: timedelta = timedelta(seconds=60)
    # Targets that name part of the site: configured resource ids and group ids.
    resource_ids: frozenset[str] = frozenset()
    group_ids: frozenset[str] = frozenset()
    party_ids: frozenset[str] = frozenset()
    tls: TlsSettings | None = None
    # phases whose site voltage (lowest, mean) TELEMETRY_USAGE carries; the listener then
    # implements ven.interface.VoltageSource
    voltage_phases: tuple[str, ...] = ()


class CertificateMismatch(aiohttp.ClientConnectionError):
    """The VTN's TLS certificate is not the pinned one."""


class _PinningConnector(aiohttp.TCPConnector):
    """Checks the VTN's certificate against the pin right after the TLS handshake, before
    anything is sent (aiohttp's own Fingerprint cannot go with a client certificate)."""

    def __init__(self, pin: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pin = pin

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> Any:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        if self._pin:
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            if der is None or not fingerprint_matches(der, self._pin):
                transport.close()
                log.error("refused the VTN: its certificate does not match "
                          "ven.tls.vtn_fingerprint")
                raise CertificateMismatch("VTN certificate does not match the pin")
        return transport, protocol


class ReplyTooLarge(Exception):
    """The VTN's reply is over :data:`~ven.oadr20b.messages.MAX_MESSAGE_BYTES`."""


async def read_capped(reply: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of an HTTP reply, read in chunks and given up as soon as it is over ``limit``
    bytes (or says so in its Content-Length), so that a huge or endless body is never held
    in memory. Raises :class:`ReplyTooLarge`."""
    declared = reply.content_length
    if declared is not None and declared > limit:
        raise ReplyTooLarge(f"its Content-Length of {declared} bytes is over the "
                            f"{limit}-byte limit")
    body = bytearray()
    async for chunk in reply.content.iter_chunked(_READ_CHUNK):
        body += chunk
        if len(body) > limit:
            raise ReplyTooLarge(f"over the {limit}-byte limit (stopped reading)")
    return bytes(body)


class _Client(OpenADRClient):
    """openleadr's client, with drbridge's transport, intake and report handling.

    openleadr checks the XSD only; :func:`ven.oadr20b.messages.read_message` also refuses
    oversize and entity-bearing payloads and content that makes no sense, and
    it never raises anything but :class:`RefusedMessage`. Replies are read up to
    :data:`~ven.oadr20b.messages.MAX_MESSAGE_BYTES` and no further; with signatures on, only
    what the signature covers is read (:mod:`ven.oadr20b.signatures`). The HTTP session speaks
    TLS 1.2+ with the VTN pinned; report requests and updates are handled here
    (see :mod:`ven.oadr20b.reports`).
    """

    last_contact: datetime | None = None
    tls: TlsSettings | None = None
    signing_pin: str | None = None  # VTN messages must be signed by this certificate

    async def _ensure_client_session(self) -> None:
        """One HTTP session; over https a TLS 1.2+ context with our client certificate and
        the configured CAs (openleadr only builds one when a client certificate is given)."""
        if self.client_session is not None:
            return
        connector = None
        if self.vtn_url.startswith("https://"):
            tls = self.tls or TlsSettings()
            context = ssl.create_default_context(cafile=tls.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.set_ciphers(OPENADR_CIPHERS)
            context.check_hostname = tls.check_hostname
            if tls.cert and tls.key:
                context.load_cert_chain(tls.cert, tls.key, tls.passphrase)
            connector = _PinningConnector(tls.vtn_fingerprint, ssl=context)
        self.client_session = aiohttp.ClientSession(
            connector=connector, headers={"content-type": "application/xml"},
            timeout=aiohttp.ClientTimeout(sock_connect=5, sock_read=10),
        )

    async def _perform_request(self, service: str, message: Any) -> tuple[str | None, dict]:
        await self._ensure_client_session()
        url = f"{self.vtn_url}/{service}"
        try:
            async with self.client_session.post(url, data=message) as reply:
                status = reply.status
                if status != HTTPStatus.OK:
                    log.warning("VTN answered %s with HTTP %d", service, status)
                    return None, {}
                try:
                    content = await read_capped(reply, MAX_MESSAGE_BYTES)
                except ReplyTooLarge as error:
                    reply.close()  # drops the connection: the rest of the body is never read
                    log.error("refused a message from the VTN: %s answer: %s", service, error)
                    return None, {}
        except Exception as error:  # unreachable VTN, reset, timeout: retried by the caller
            log.warning("VTN %s unreachable: %s: %s", url, type(error).__name__, error)
            return None, {}
        if not content:
            return None, {}
        try:
            if self.signing_pin:
                signed = signed_payload(parse_untrusted(content), self.signing_pin)
                # openleadr's check of the (signed) timestamp and nonce, and its nonce cache
                openleadr_messaging._verify_replay_protect(signed.replay_protect)
                content = signed.payload  # what the signature covers, and nothing else
            message_type, payload = read_message(content)
        except RefusedMessage as error:
            log.error("refused a message from the VTN: %s", error.reason)
            return None, {}
        except ValueError as error:  # replay protection: too old, or a nonce seen before
            log.error("refused a message from the VTN: signature: %s", error)
            return None, {}
        self.last_contact = datetime.now(UTC)
        code = (payload.get("response") or {}).get("response_code")
        if code not in (None, 200):
            log.warning("VTN answered %s with OpenADR status %s", message_type, code)
        return message_type, payload

    async def _report_queue_worker(self) -> None:
        """Send each finished report (oadrUpdateReport) through drbridge's template, which
        carries TELEMETRY_STATUS payloads too."""
        while True:
            report = await self.pending_reports.get()
            try:
                message = self._create_message(
                    UPDATE_REPORT_TEMPLATE, request_id=utils.generate_id(), ven_id=self.ven_id,
                    reports=[update_report_payload(report)])
                message_type, payload = await self._perform_request("EiReport", message)
                if message_type is not None and payload.get("cancel_report"):
                    await self.cancel_report(payload["cancel_report"])
            except Exception:  # one bad report must not stop the others
                log.exception("could not send report %s", report.report_specifier_id)

    async def create_report(self, response_payload: dict[str, Any]) -> None:
        """oadrCreateReport (or the requests in oadrRegisteredReport): schedule each requested
        report at the granularity the VTN asks for, when that is within what was offered;
        history is answered at once for the window asked for. One oadrCreatedReport lists
        the requests taken on.

        Replaces openleadr's, which shares one list of rIDs between all the requests of a
        message and looks back from now for history.
        """
        accepted: list[str] = []
        for request in response_payload.get("report_requests") or []:
            try:
                if await self._take_report_request(request):
                    accepted.append(str(request["report_request_id"]))
            except Exception:  # a malformed request must not stop the others
                log.exception("could not take report request %s", request)
        request_id = response_payload.get("request_id") or \
            (response_payload.get("response") or {}).get("request_id")
        message = self._create_message(
            "oadrCreatedReport", ven_id=self.ven_id,
            pending_reports=[{"report_request_id": r} for r in accepted],
            response={"response_code": 200, "response_description": "OK",
                      "request_id": request_id})
        await self._perform_request("EiReport", message)

    async def _take_report_request(self, request: dict[str, Any]) -> bool:
        specifier = request["report_specifier"]
        specifier_id = specifier["report_specifier_id"]
        request_id = request["report_request_id"]
        report = next((r for r in self.reports if r.report_specifier_id == specifier_id), None)
        if report is None:
            log.warning("the VTN asked for report %s, which we did not offer", specifier_id)
            return False
        if specifier_id == HISTORY_ID:
            await self._history_report(request)
            return True
        granularity = specifier.get("granularity") or timedelta(0)
        r_ids = []
        payloads = specifier.get("specifier_payloads") or []
        for payload in payloads if isinstance(payloads, list) else [payloads]:
            description = next((d for d in report.report_descriptions
                                if d.r_id == payload.get("r_id")), None)
            if description is None:
                log.warning("report %s has no rID %s", specifier_id, payload.get("r_id"))
                continue
            offered = description.sampling_rate
            if granularity and not offered.min_period <= granularity <= offered.max_period:
                log.warning("the VTN asked for %s every %s; offered %s to %s: refused",
                            description.r_id, granularity, offered.min_period,
                            offered.max_period)
                continue
            r_ids.append(description.r_id)
        if not r_ids:
            return False
        back = specifier.get("report_back_duration") or timedelta(0)
        entry: dict[str, Any] = {"report_request_id": request_id,
                                 "report_specifier_id": specifier_id,
                                 "report_back_duration": back, "r_ids": r_ids,
                                 "granularity": granularity, "job": None}
        self.report_requests.append(entry)
        if granularity > timedelta(0):
            # sample every granularity; openleadr's update_report sends once a report-back
            # duration's worth of samples is in
            entry["job"] = self.scheduler.add_job(
                self.update_report, trigger="interval",
                seconds=granularity.total_seconds(), args=[request_id])
        else:
            await self.update_report(request_id)  # a single report, now
        return True

    async def _history_report(self, request: dict[str, Any]) -> None:
        specifier = request["report_specifier"]
        offered = next(d.sampling_rate for r in self.reports
                       if r.report_specifier_id == HISTORY_ID
                       for d in r.report_descriptions if d.r_id == HISTORY_RID)
        granularity = specifier.get("granularity") or offered.min_period
        # honoured within what was offered
        granularity = min(max(granularity, offered.min_period), offered.max_period)
        window = specifier.get("report_interval") or {}
        now = datetime.now(UTC)
        if window.get("dtstart"):
            start = window["dtstart"]
            end = min(start + (window.get("duration") or now - start), now)
        else:
            end = now
            start = end - (specifier.get("report_back_duration") or granularity)
        callback = self.report_callbacks[(HISTORY_ID, HISTORY_RID)]
        values = callback(date_from=start, date_to=end, sampling_interval=granularity)
        report = objects.Report(
            report_specifier_id=HISTORY_ID, report_name="HISTORY_USAGE",
            report_request_id=request["report_request_id"], duration=end - start,
            intervals=[objects.ReportInterval(
                dtstart=at, duration=granularity,
                report_payload=objects.ReportPayload(r_id=HISTORY_RID, value=value))
                for at, value in values])
        await self.pending_reports.put(report)

    async def cancel_report(self, payload: dict[str, Any]) -> None:
        request = next((r for r in self.report_requests
                        if r["report_request_id"] == payload.get("report_request_id")), None)
        if request is not None and request.get("job") is not None:
            request["job"].remove()
            request["job"] = None
        if request is not None:
            self.report_requests.remove(request)
        message = self._create_message(
            "oadrCanceledReport", ven_id=self.ven_id, pending_reports=[],
            report_request_id=payload.get("report_request_id"),
            response={"response_code": 200 if request else 452,
                      "response_description": "OK" if request else "Invalid ID",
                      "request_id": payload.get("request_id")})
        await self._perform_request("EiReport", message)


class Ven:
    def __init__(
        self,
        settings: VenSettings,
        listener: VenListener,
        registration: Registration | None = None,
        state: VenState | None = None,
        known_events: Iterable[tuple[DrEvent, OptType]] = (),
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._listener = listener
        self._state: VenState = state or MemoryState()
        self._rng = rng or random.Random()
        tls = settings.tls or TlsSettings()
        signing = tls.xml_signatures
        self._client = _Client(
            ven_name=settings.ven_name,
            vtn_url=settings.vtn_url,
            ven_id=registration.ven_id if registration else None,
            show_fingerprint=False,
            cert=tls.cert if signing else None,
            key=tls.key if signing else None,
            passphrase=tls.passphrase if signing else None,
            disable_signature=not signing,
        )
        self._client.tls = settings.tls
        # replies must carry a valid signature by this certificate (checked by _Client, not
        # by openleadr, whose check wants the short form of the pin and reads unsigned parts)
        self._client.signing_pin = tls.signing_pin
        for warning in transport_warnings(settings.vtn_url, settings.tls):
            log.warning("INSECURE: %s", warning)
        # Re-registration under the id the VTN gave us before a restart.
        self._previous_registration_id = registration.registration_id if registration else None
        install_templates()
        offer_reports(self._client, listener, settings.resource_id, settings.group_ids,
                      settings.telemetry_interval)
        if settings.voltage_phases:
            offer_voltage_reports(self._client, listener,  # type: ignore[arg-type]
                                  settings.resource_id, settings.voltage_phases,
                                  settings.telemetry_interval)
        self._stopped = asyncio.Event()
        self._registration_lost = asyncio.Event()
        self.known: dict[str, DrEvent] = {}
        self.opts: dict[str, OptType] = {}
        # (eventID, modificationNumber) of the bad events the VTN's last list held: each is
        # logged when it first appears, not again on every poll that repeats it
        self.refused_events: set[tuple[str, int]] = set()
        for event, opt in known_events:
            self.known[event.event_id] = event
            self.opts[event.event_id] = opt

    @property
    def registration(self) -> Registration | None:
        client = self._client
        if client.ven_id and client.registration_id:
            return Registration(client.ven_id, client.registration_id)
        return None

    @property
    def last_contact(self) -> datetime | None:
        return self._client.last_contact

    @property
    def openadr_version(self) -> str:
        return "2.0b"

    @property
    def program_names(self) -> dict[str, str]:
        """OpenADR 2.0b has no program objects (its events name a market context)."""
        return {}

    async def run(self) -> None:
        """Register (retrying for as long as it takes), then poll until :meth:`stop`.

        When the VTN asks for a re-registration or cancels the registration, the VEN
        registers again; known events keep executing meanwhile (the listener holds them).
        """
        client = self._client
        client.loop = asyncio.get_running_loop()
        client.scheduler.start()  # openleadr schedules report sampling on it
        while not self._stopped.is_set():
            await self._register_until_done()
            if self._stopped.is_set():
                return
            registration = self.registration
            assert registration is not None
            self._listener.on_registration(registration)
            self._drop_report_requests()  # a new registration: the VTN asks for reports anew
            await client.register_reports(client.reports)
            if client.report_queue_task is None or client.report_queue_task.done():
                client.report_queue_task = asyncio.create_task(client._report_queue_worker())
            await self._request_events()
            await self._poll_until_registration_lost()

    def _drop_report_requests(self) -> None:
        client = self._client
        for request in client.report_requests:
            if request.get("job") is not None:
                request["job"].remove()
        client.report_requests.clear()
        client.incomplete_reports.clear()

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

    async def _register_until_done(self) -> None:
        delay = backoff_delays(
            self._settings.retry_initial.total_seconds(),
            self._settings.retry_max.total_seconds(),
            self._rng,
        )
        while not self._stopped.is_set():
            if await self._register():
                self._registration_lost.clear()
                return
            wait = delay()
            log.warning("registration with %s failed; retrying in %.1f s",
                        self._settings.vtn_url, wait)
            await self._sleep(wait)

    async def _register(self) -> bool:
        client = self._client
        try:
            _, reply = await client.query_registration()
            request_id = ((reply or {}).get("response") or {}).get("request_id")
            await client.create_party_registration(
                ven_id=client.ven_id, request_id=request_id,
                registration_id=client.registration_id or self._previous_registration_id,
            )
        except Exception:  # openleadr raises on replies it cannot digest; keep trying
            log.exception("registration attempt failed")
            return False
        return client.registration_id is not None

    async def _poll_until_registration_lost(self) -> None:
        client = self._client
        while not self._stopped.is_set() and not self._registration_lost.is_set():
            try:
                await self._poll_once()
            except Exception:  # one bad exchange must not end polling
                log.exception("polling the VTN failed")
            interval = min(client.poll_frequency or timedelta(seconds=10), timedelta(hours=24))
            try:
                await asyncio.wait_for(self._registration_lost.wait(), interval.total_seconds())
            except TimeoutError:
                pass

    async def _poll_once(self) -> None:
        client = self._client
        message_type, payload = await client.poll()
        if message_type is None or message_type == "oadrResponse":
            return
        if message_type == "oadrDistributeEvent":
            await self._on_distribute_event(payload)
        elif message_type == "oadrRequestReregistration":
            log.info("the VTN asks us to register again")
            await client.send_response(service="EiRegisterParty")
            self._registration_lost.set()
        elif message_type == "oadrCancelPartyRegistration":
            await self._on_cancel_party_registration(payload)
        elif message_type == "oadrCreateReport":
            if "report_requests" in payload:
                await client.create_report(payload)
        elif message_type == "oadrCancelReport":
            await client.cancel_report(payload)
        elif message_type == "oadrRegisterReport":
            # The VTN offers reports of its own; the VEN asks for none of them.
            message = client._create_message(
                "oadrRegisteredReport", report_requests=[], ven_id=client.ven_id,
                response={"response_code": 200, "response_description": "OK",
                          "request_id": payload.get("request_id")})
            await client._perform_request("EiReport", message)
        else:
            log.warning("no handler for %s from the VTN; ignored", message_type)

    async def _on_cancel_party_registration(self, payload: dict[str, Any]) -> None:
        client = self._client
        ours = str(payload.get("registration_id")) == str(client.registration_id)
        response = {"response_code": 200 if ours else 452,
                    "response_description": "OK" if ours else "Invalid ID",
                    "request_id": payload.get("request_id")}
        message = client._create_message(
            "oadrCanceledPartyRegistration", response=response, ven_id=client.ven_id,
            registration_id=payload.get("registration_id"))
        await client._perform_request("EiRegisterParty", message)
        if not ours:
            log.warning("the VTN cancelled registration %s, which is not ours (%s)",
                        payload.get("registration_id"), client.registration_id)
            return
        log.warning("the VTN cancelled our registration %s; registering again",
                    client.registration_id)
        client.registration_id = None
        self._previous_registration_id = None
        self._listener.on_registration_cancelled()
        self._registration_lost.set()

    async def _request_events(self) -> None:
        """oadrRequestEvent: the VTN's full list of our events (after each registration)."""
        message_type, payload = await self._client.request_event()
        if message_type == "oadrDistributeEvent":
            await self._on_distribute_event(payload)

    # events -----------------------------------------------------------------------------------
    def _site_targets(self) -> SiteTargets:
        settings = self._settings
        return SiteTargets(ven_id=self._client.ven_id, site_resource_id=settings.resource_id,
                           resource_ids=settings.resource_ids, group_ids=settings.group_ids,
                           party_ids=settings.party_ids)

    async def _on_distribute_event(self, payload: dict[str, Any]) -> None:
        """One oadrDistributeEvent: every event of this VEN, answered with oadrCreatedEvent
        where the VTN asks for an answer. An event that cannot be read is not acted on and is
        answered with an error (:meth:`_refuse_event`); the others are taken as usual."""
        now = datetime.now(UTC)
        events, bad_events = sort_events(payload)
        responses: list[dict[str, Any]] = []
        listed: list[str] = []
        for event in events:
            listed.append(event.event_id)
            opt = await self._take_event(event, now)
            if opt is not None and event.response_required:
                responses.append({
                    "response_code": 200, "response_description": "OK", "opt_type": opt,
                    "request_id": payload.get("request_id"), "event_id": event.event_id,
                    "modification_number": event.modification_number,
                })
        refused: set[tuple[str, int]] = set()
        for bad in bad_events:
            self._refuse_event(bad, now, refused)
            if not bad.event_id:
                continue  # nothing to answer it by
            # Still listed: a version the VEN already holds is not implicitly cancelled.
            listed.append(bad.event_id)
            if bad.response_required:
                responses.append({
                    "response_code": EVENT_INVALID, "response_description": "Invalid data",
                    "opt_type": "optOut", "request_id": payload.get("request_id"),
                    "event_id": bad.event_id, "modification_number": bad.modification_number,
                })
        self.refused_events = refused
        for event_id in implicitly_cancelled(self.known, listed, now):
            log.info("event %s is no longer listed by the VTN: cancelled", event_id)
            cancelled = self.known[event_id].model_copy(update={"status": EventStatus.CANCELLED})
            self.known[event_id] = cancelled
            await self._listener.on_event(cancelled)
        if responses:
            client = self._client
            message = client._create_message(
                "oadrCreatedEvent", ven_id=client.ven_id, event_responses=responses,
                response={"response_code": 200, "response_description": "OK",
                          "request_id": payload.get("request_id")})
            await client._perform_request("EiEvent", message)

    def _refuse_event(self, bad: BadEvent, now: datetime, refused: set[tuple[str, int]]) -> None:
        """Log a bad event the first time the VTN lists it (a VTN resends its list on every
        poll); the VEN does not act on it, and keeps what it held of the event before."""
        key = (bad.event_id, bad.modification_number)
        refused.add(key)
        if key in self.refused_events:
            return
        held = self.known.get(bad.event_id)
        if held is not None and held.status != EventStatus.CANCELLED and not held.is_over(now):
            outcome = f"modification {held.modification_number} stays in force"
        else:
            outcome = "not acted on"
        if not bad.event_id:
            answer = "not answered (no eventID to answer it by)"
        elif bad.response_required:
            answer = f"answered {EVENT_INVALID} (invalid data)"
        else:
            answer = "not answered (responseRequired never)"
        log.error("refused event %s (modification %d) from the VTN: %s; %s, %s",
                  bad.event_id or "without an eventID", bad.modification_number, bad.reason,
                  outcome, answer)

    async def _take_event(self, event: DrEvent, now: datetime) -> OptType | None:
        """Act on one listed event; the opt to answer with, or None to answer nothing."""
        event_id = event.event_id
        for why in event.ignored_signals:
            log.warning("event %s: signal ignored: %s", event_id, why)
        change = classify(self.known.get(event_id), event)
        if change in (Change.UNCHANGED, Change.STALE):
            if change == Change.STALE:
                log.info("event %s: modification %d is older than %d; ignored", event_id,
                         event.modification_number, self.known[event_id].modification_number)
                return None
            return self.opts.get(event_id, "optOut")
        targeting = match_targets(event.targets, self._site_targets())
        if targeting is None:
            log.info("event %s targets %s, none of which is this site; opted out", event_id,
                     dict(event.targets))
            self.opts[event_id] = "optOut"
            return "optOut"
        event = event.model_copy(update={"matched_resources": targeting.resources,
                                         "matched_groups": targeting.groups})
        event = event.randomised(random_offset(event, self._state, self._rng))
        log.info("event %s: %s (modification %d, %s)", event_id, change.value,
                 event.modification_number, event.status_at(now).value)
        opt = await self._listener.on_event(event)
        self.known[event_id] = event
        self.opts[event_id] = opt
        return opt


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

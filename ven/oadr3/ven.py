"""The OpenADR 3 VEN: registration, programs, events (polled and pushed), reports.

It presents the bridge the same face as the 2.0b :class:`ven.oadr20b.client.Ven`: built from its
settings, the :class:`~ven.interface.VenListener` and the :class:`~ven.interface.VenState`;
``run()``, ``stop()``, ``registration``, ``last_contact``, ``known``, ``opts`` and the opt
methods. Every event is handed to the listener as the same :class:`~policies.events.DrEvent`:

- new, or changed since the VEN last handed it on: with the next modification number
  (OpenADR 3 has none; the VEN counts changes of content, so the listener's rule "a higher
  modification replaces the schedule" holds);
- deleted (a DELETE notification, or a known event the VTN's complete list leaves out while
  it still matters): the known event with status ``cancelled``, which lifts its limits, as
  a 2.0b cancellation does;
- aimed at other VENs or resources: not handed on (an event that was ours and is
  retargeted away is cancelled).

The VTN being down, at start or later, is retried with jittered exponential backoff; known
events keep executing meanwhile (the listener holds them) and ``last_contact`` ages, so the
policy's fail-safe applies. Reports are queued in a :class:`~ven.oadr3.outbox.ReportOutbox`
before the first attempt and retried until the VTN accepts them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from policies.events import DrEvent, EventStatus, InvalidEvent, OptType
from ven.interface import Registration, VenListener, VenState
from ven.oadr3.auth import Anonymous, ClientCredentials, Credentials, StaticBearer
from ven.oadr3.http import VtnBadReply, VtnHttp, VtnRefused, VtnUnreachable
from ven.oadr3.mapping import (
    ResolvedInterval,
    SiteNames,
    map_event,
    match_targets,
    resolve_intervals,
)
from ven.oadr3.outbox import MemoryOutbox, ReportOutbox
from ven.oadr3.reports import Sample, batches, report_body, understand
from ven.oadr3.settings import Ven3Settings
from ven.oadr3.webhook import WebhookServer
from ven.oadr3.wire import (
    LENIENT_READS,
    Event,
    Notification,
    Program,
    ResourceObject,
    Subscription,
    VenObject,
    target_strings,
)
from ven.shared import MemoryState, backoff_delays, implicitly_cancelled, random_offset

log = logging.getLogger(__name__)

PAGE = 50  # the most the OpenAPI document lets a client ask for at once
MAX_PAGES = 40  # 2,000 objects: a longer list is read no further (and not trusted as complete)
SAMPLES_KEPT = timedelta(days=2)
REPORT_CHECK_S = 1.0
_VTN_ERRORS = (VtnUnreachable, VtnRefused, VtnBadReply)


def _content(event: DrEvent) -> dict[str, Any]:
    """What an event says, leaving out what the VEN itself sets."""
    return event.model_dump(exclude={"status", "modification_number"})


class Ven3:
    def __init__(
        self,
        settings: Ven3Settings,
        listener: VenListener,
        registration: Registration | None = None,
        state: VenState | None = None,
        known_events: Iterable[tuple[DrEvent, OptType]] = (),
        rng: random.Random | None = None,
        outbox: ReportOutbox | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._listener = listener
        self._state: VenState = state or MemoryState()
        self._outbox: ReportOutbox = outbox or MemoryOutbox()
        self._rng = rng or random.Random()
        self._clock = clock
        self.credentials: Credentials = (
            ClientCredentials(settings.vtn_url, settings.client_id, settings.client_secret or "",
                              settings.token_url, clock)
            if settings.client_id else StaticBearer(settings.bearer_token)
            if settings.bearer_token else Anonymous())
        if isinstance(self.credentials, Anonymous):
            log.warning("no credentials for the VTN (ven.auth): only a VTN open to anyone "
                        "will answer")
        self._http = VtnHttp(settings.vtn_url, self.credentials, clock=clock)
        self._ven_id = registration.ven_id if registration else None
        self._registered = False
        self._registered_at: datetime | None = None
        self._names = SiteNames(settings.ven_name, settings.resource_id, settings.group_ids,
                                settings.resource_ids)
        self.programs: dict[str, Program] = {}
        self.known: dict[str, DrEvent] = {}
        self.opts: dict[str, OptType] = {}
        # per event: when the VEN first saw it ('now' in its times), and its intervals as
        # the VTN set them (what reports refer to)
        self._anchors: dict[str, datetime] = {}
        self._sources: dict[str, tuple[Event, list[ResolvedInterval]]] = {}
        for event, opt in known_events:
            self.known[event.event_id] = event
            self.opts[event.event_id] = opt
            self._anchors[event.event_id] = event.start - event.random_offset
        self._intake = asyncio.Lock()
        self._stopped = asyncio.Event()
        self._samples: deque[Sample] = deque()
        self._retry_at: dict[str, tuple[datetime, int]] = {}  # report key -> (when, attempts)
        self._once: set[str] = set()
        self._lenient_seen: set[str] = set()
        self._webhook_token = secrets.token_urlsafe(32)
        self.webhook: WebhookServer | None = None
        self._subscribed: set[str | None] = set()
        self._subscriptions_refused = False
        self._tasks: list[asyncio.Task[None]] = []

    # what the bridge reads -------------------------------------------------------------------
    @property
    def registration(self) -> Registration | None:
        """The VEN object's id on the VTN (OpenADR 3 has no separate registration id)."""
        if self._ven_id is None or not self._registered:
            return None
        return Registration(self._ven_id, self._ven_id)

    @property
    def last_contact(self) -> datetime | None:
        return self._http.last_contact

    @property
    def openadr_version(self) -> str:
        return self._settings.version

    @property
    def program_names(self) -> dict[str, str]:
        """The programs the VTN shows this VEN, by id (for the dashboard)."""
        return {program_id: p.program_name for program_id, p in self.programs.items()}

    # OpenADR 3 has no opt messages: a site's opt-out is its own affair (the plan drops the
    # event); there is nothing to tell the VTN, so each opt counts as done at once.
    async def opt_out_of_event(self, opt_id: str, event_id: str, modification_number: int,
                               reason: str = "notParticipating",
                               market_context: str | None = None) -> bool:
        self._log_once(f"opt:{event_id}", logging.INFO,
                       "event %s: opted out locally (OpenADR 3 has no opt message)", event_id)
        return True

    async def declare_unavailable(self, opt_id: str, windows: list[Any],
                                  reason: str = "notParticipating",
                                  market_context: str | None = None) -> bool:
        return True

    async def cancel_opt(self, opt_id: str) -> bool:
        return True

    # running ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Register (retrying for as long as it takes), then poll until :meth:`stop`."""
        await self._start_webhook()
        self._tasks = [asyncio.create_task(self._sample_loop(), name="oadr3-samples"),
                       asyncio.create_task(self._report_loop(), name="oadr3-reports")]
        delay = self._backoff()
        try:
            while not self._stopped.is_set():
                try:
                    if self._registration_due():
                        await self._register()
                    # a notification waits for the poll in progress, which would otherwise
                    # undo its change with the older list it fetched
                    async with self._intake:
                        await self._poll_events()
                except _VTN_ERRORS as error:
                    wait = delay()
                    log.warning("VTN %s: %s; retrying in %.1f s", self._settings.vtn_url,
                                error, wait)
                    await self._sleep(wait)
                    continue
                except Exception:  # one bad exchange must not end the VEN
                    log.exception("exchange with the VTN failed")
                    await self._sleep(delay())
                    continue
                delay = self._backoff()
                self._log_lenient_reads()
                await self._sleep(self._settings.poll_interval.total_seconds())
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        self._stopped.set()
        for task in self._tasks:
            task.cancel()
        if self.webhook is not None:
            await self.webhook.close()
        await self._http.close()

    def _backoff(self) -> Callable[[], float]:
        return backoff_delays(self._settings.retry_initial.total_seconds(),
                              self._settings.retry_max.total_seconds(), self._rng)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _log_once(self, key: str, level: int, message: str, *args: Any) -> None:
        if key in self._once:
            return
        if len(self._once) > 10_000:  # bounded, whatever a VTN sends
            self._once.clear()
        self._once.add(key)
        log.log(level, message, *args)

    def _log_lenient_reads(self) -> None:
        for kind, count in LENIENT_READS.items():
            if kind not in self._lenient_seen:
                self._lenient_seen.add(kind)
                log.warning("the VTN sends %s; read anyway (%d so far)", kind, count)

    # registration ----------------------------------------------------------------------------
    def _registration_due(self) -> bool:
        return not self._registered or self._registered_at is None or \
            self._clock() - self._registered_at >= self._settings.program_refresh

    async def _register(self) -> None:
        """Find or create the VEN object and its resources, read what the utility granted
        them and the programs; subscribe where the VTN offers it."""
        ven = await self._find_or_create_ven()
        resources = await self._ensure_resources(ven.id)
        site = resources.get(self._settings.resource_id)
        self._names = SiteNames(
            self._settings.ven_name, self._settings.resource_id, self._settings.group_ids,
            self._settings.resource_ids,
            site_targets=frozenset(target_strings(ven.targets))
            | frozenset(target_strings(site.targets if site else None)),
            group_targets={g: frozenset(target_strings(r.targets)) for g in
                           self._settings.group_ids if (r := resources.get(g)) is not None})
        programs = await self._list_targeted("/programs", Program)
        self.programs = {p.id: p for p in programs[0]}
        first = self._ven_id != ven.id or not self._registered
        self._ven_id = ven.id
        self._registered = True
        self._registered_at = self._clock()
        if first:
            log.info("registered with the VTN as %s (ven object %s); programs: %s",
                     self._settings.ven_name, ven.id,
                     ", ".join(p.program_name for p in self.programs.values()) or "none")
            registration = self.registration
            assert registration is not None
            self._listener.on_registration(registration)
        await self._subscribe()

    async def _find_or_create_ven(self) -> VenObject:
        name = self._settings.ven_name
        for attempt in (1, 2):
            found = await self._list("/vens", VenObject, {"venName": name})
            ours = next((v for v in found[0] if v.ven_name == name), None)
            if ours is not None:
                return ours
            if attempt == 2:
                break
            body: dict[str, Any] = {"venName": name}
            if self._settings.version != "3.0.1":
                body = {"objectType": "VEN_VEN_REQUEST", **body}
            try:
                created = await self._http.post("/vens", body)
            except VtnRefused as error:
                if error.status == 409:  # created meanwhile (by us before a restart): find it
                    continue
                raise
            try:
                return VenObject.model_validate(created)
            except ValidationError:
                continue  # a VTN that answers POST without the object: read it back
        raise VtnBadReply(f"the VTN lists no ven object named {name!r} after creating it")

    async def _ensure_resources(self, ven_id: str) -> dict[str, ResourceObject]:
        """The site's resource and each group's, created where missing; by name."""
        if self._settings.version == "3.0.1":
            path, params = f"/vens/{ven_id}/resources", {}
        else:
            path, params = "/resources", {"venID": ven_id}
        listed, _ = await self._list(path, ResourceObject, params)
        have = {r.resource_name: r for r in listed if r.ven_id in (None, ven_id)}
        for name in [self._settings.resource_id, *sorted(self._settings.group_ids)]:
            if name in have:
                continue
            body: dict[str, Any] = {"resourceName": name, "venID": ven_id}
            if self._settings.version != "3.0.1":
                body = {"objectType": "VEN_RESOURCE_REQUEST", **body}
            created = await self._http.post(path, body)
            try:
                have[name] = ResourceObject.model_validate(created)
            except ValidationError:
                log.warning("the VTN answered the creation of resource %s without it", name)
            log.info("created resource %s of ven %s", name, ven_id)
        return have

    def _granted(self) -> list[str]:
        granted = set(self._names.site_targets)
        for targets in (self._names.group_targets or {}).values():
            granted |= targets
        return sorted(granted)

    async def _list(self, path: str, model: Any, params: dict[str, Any] | None = None
                    ) -> tuple[list[Any], bool]:
        """Every object of a collection, each validated on its own: one that does not
        validate is logged and left out. Also whether the list is complete."""
        items, complete = await self._raw_list(path, params or {})
        found: list[Any] = []
        for item in items:
            try:
                found.append(model.model_validate(item))
            except ValidationError as error:
                self._refused(path, item, error)
        return found, complete

    async def _list_targeted(self, path: str, model: Any) -> tuple[list[Any], bool]:
        """Objects without targets, and (3.1.0) those aimed at the targets granted to us: a
        VTN only shows a VEN an object with targets when asked for them."""
        plain, complete = await self._list(path, model)
        granted = self._granted()
        if not granted or self._settings.version == "3.0.1":
            return plain, complete
        aimed, also = await self._list(path, model, {"targets": granted})
        seen = {o.id for o in plain}
        return plain + [o for o in aimed if o.id not in seen], complete and also

    def _refused(self, where: str, item: Any, error: ValidationError) -> None:
        name = item.get("id") if isinstance(item, dict) else None
        first = error.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        self._log_once(f"refused:{where}:{name}:{at}:{first['type']}", logging.ERROR,
                       "refused %s from the VTN (%s %s): %s: %s", where.strip("/"),
                       "id" if name else "without an id", str(name)[:64] if name else "",
                       at, first["msg"])

    # subscriptions (webhooks) ----------------------------------------------------------------
    async def _start_webhook(self) -> None:
        hook = self._settings.webhook
        if hook is None:
            return
        context = None
        if hook.tls_cert and hook.tls_key:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(hook.tls_cert, hook.tls_key)
        server = WebhookServer(hook.host, hook.port, hook.path, self._webhook_token,
                               self._on_notification, context)
        try:
            await server.start()
        except OSError as error:
            log.error("cannot listen for VTN notifications on %s:%d (%s); polling only",
                      hook.host, hook.port, error)
            await server.close()
            return
        self.webhook = server

    async def _subscribe(self) -> None:
        """One subscription per program to the events' creation, change and deletion, with
        this run's bearer token; the VEN's older ones to the same callback are removed."""
        hook = self._settings.webhook
        if hook is None or self.webhook is None or self._subscriptions_refused:
            return
        if not self._subscribed:
            if self._settings.version != "3.0.1":
                try:
                    notifiers = await self._http.get("/notifiers")
                except VtnRefused:
                    notifiers = None  # not there: try all the same
                if isinstance(notifiers, dict) and notifiers.get("WEBHOOK") is False:
                    log.warning("the VTN offers no webhooks; polling only")
                    self._subscriptions_refused = True
                    return
            mine, _ = await self._list("/subscriptions", Subscription,
                                       {"clientName": self._settings.ven_name})
            for old in mine:
                if any(o.get("callbackUrl") == hook.public_url for o in old.object_operations):
                    await self._http.delete(f"/subscriptions/{old.id}")
        wanted: list[str | None] = list(self.programs) or [None]
        operations = ["CREATE", "UPDATE", "DELETE"]
        for program_id in wanted:
            if program_id in self._subscribed:
                continue
            body = {"clientName": self._settings.ven_name, "programID": program_id,
                    "objectOperations": [{"objects": ["EVENT"], "operations": operations,
                                          "callbackUrl": hook.public_url,
                                          "bearerToken": self._webhook_token}]}
            try:
                await self._http.post("/subscriptions", body)
            except VtnRefused as error:
                log.warning("the VTN refused a subscription (%s); polling only", error)
                self._subscriptions_refused = True
                return
            self._subscribed.add(program_id)
            log.info("subscribed to the events of program %s at %s", program_id or "(any)",
                     hook.public_url)

    async def _on_notification(self, data: dict[str, Any]) -> None:
        try:
            note = Notification.model_validate(data)
        except ValidationError as error:
            self._refused("notification", data, error)
            return
        if note.object_type.upper() != "EVENT":
            return  # programs and the rest are read again at the next refresh
        operation = note.operation.upper()
        async with self._intake:
            if operation == "DELETE":
                event_id = note.object.get("id")
                if isinstance(event_id, str):
                    await self._cancel(event_id, "deleted by the VTN")
            elif operation in ("CREATE", "UPDATE", "POST", "PUT"):
                await self._take_raw(note.object, "notification")

    # events ----------------------------------------------------------------------------------
    async def _poll_events(self) -> None:
        if self._settings.version != "3.0.1" and self._granted():
            plain, complete = await self._raw_list("/events", {})
            aimed, also = await self._raw_list("/events", {"targets": self._granted()})
            items, complete = plain + aimed, complete and also
        else:
            items, complete = await self._raw_list("/events", {})
        listed: set[str] = set()
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                # even one that is refused below: a malformed copy cancels nothing
                listed.add(item["id"])
            await self._take_raw(item, "events")
        if complete:
            now = self._clock()
            for event_id in implicitly_cancelled(self.known, listed, now):
                if self.known[event_id].status != EventStatus.CANCELLED:
                    await self._cancel(event_id, "no longer listed by the VTN")

    async def _raw_list(self, path: str, params: dict[str, Any]) -> tuple[list[Any], bool]:
        """Every item of a collection as sent, page by page; whether the list is complete
        (a VTN that ignores paging sends it all at once, or the same page again)."""
        found: list[Any] = []
        previous: list[Any] | None = None
        for page in range(MAX_PAGES):
            items = await self._http.get(path, {**params, "skip": page * PAGE, "limit": PAGE})
            if not isinstance(items, list):
                raise VtnBadReply(f"GET {path}: expected a list, got {type(items).__name__}")
            if items == previous:
                return found, True
            found.extend(items)
            if len(items) != PAGE:
                return found, True
            previous = items
        log.warning("GET %s: more than %d objects; the rest is not read", path,
                    PAGE * MAX_PAGES)
        return found, False

    async def _take_raw(self, item: Any, where: str) -> None:
        """Validate, target, map and hand on one event as the VTN sent it."""
        try:
            event = Event.model_validate(item)
        except ValidationError as error:
            self._refused(where, item, error)
            return
        now = self._clock()
        targeting = match_targets(event.targets, self._names)
        if targeting is None:
            if event.id in self.known:
                await self._cancel(event.id, "no longer aimed at this site")
            else:
                self._log_once(f"targets:{event.id}", logging.INFO,
                               "event %s is for %s, none of which is this site; ignored",
                               event.id, [t if isinstance(t, str) else t.model_dump()
                                          for t in event.targets or ()][:10])
            return
        anchor = self._anchors.get(event.id, now)
        try:
            mapped = map_event(event, self.programs.get(event.program_id), anchor, now)
            intervals = resolve_intervals(event, anchor)
        except InvalidEvent as error:
            self._log_once(f"invalid:{event.id}:{error}", logging.ERROR,
                           "refused event from the VTN: %s", error)
            return
        mapped = mapped.model_copy(update={"matched_resources": targeting.resources,
                                           "matched_groups": targeting.groups})
        offset = random_offset(mapped, self._state, self._rng)
        await self._take_event(mapped.randomised(offset), now)
        if event.id in self.known:
            self._anchors.setdefault(event.id, anchor)
            self._sources[event.id] = (event, intervals)  # what its reports refer to

    async def _take_event(self, event: DrEvent, now: datetime) -> None:
        event_id = event.event_id
        known = self.known.get(event_id)
        if known is None and event.is_over(now):
            self._log_once(f"over:{event_id}", logging.DEBUG,
                           "event %s is over; not handed on", event_id)
            return
        if known is not None and known.status != EventStatus.CANCELLED \
                and _content(known) == _content(event):
            return  # unchanged: the VTN lists every event on every poll
        number = 0 if known is None else known.modification_number + 1
        change = "new" if known is None else "revived" \
            if known.status == EventStatus.CANCELLED else "modified"
        event = event.model_copy(update={"modification_number": number,
                                         "status": event.status_at(now)})
        for why in event.ignored_signals:
            self._log_once(f"ignored:{event_id}:{why}", logging.WARNING,
                           "event %s: payload ignored: %s", event_id, why)
        log.info("event %s: %s (modification %d, %s)", event_id, change, number,
                 event.status.value)
        opt = await self._listener.on_event(event)
        self.known[event_id] = event
        self.opts[event_id] = opt

    async def _cancel(self, event_id: str, why: str) -> None:
        known = self.known.get(event_id)
        if known is None or known.status == EventStatus.CANCELLED:
            return
        log.info("event %s %s: cancelled", event_id, why)
        cancelled = known.model_copy(update={"status": EventStatus.CANCELLED})
        self.known[event_id] = cancelled
        await self._listener.on_event(cancelled)


    # reports ---------------------------------------------------------------------------------
    def _sample(self) -> Sample:
        listener = self._listener
        voltages = {}
        if self._settings.voltage_phases:
            voltages = dict(listener.site_voltages())  # type: ignore[attr-defined]
        return Sample(at=self._clock(), site_w=listener.measured_load_w(),
                      energy_wh=listener.measured_energy_wh(),
                      groups_w={g: listener.group_load_w(g) for g in self._settings.group_ids},
                      voltages=voltages)

    async def _sample_loop(self) -> None:
        while True:
            try:
                sample = self._sample()
                self._samples.append(sample)
                while self._samples and sample.at - self._samples[0].at > SAMPLES_KEPT:
                    self._samples.popleft()
            except Exception:  # a reading that fails must not end sampling
                log.exception("sampling the site for reports failed")
            await asyncio.sleep(self._settings.sample_interval.total_seconds())

    async def _report_loop(self) -> None:
        while True:
            try:
                self._queue_due_reports(self._clock())
                await self._send_reports(self._clock())
            except Exception:  # retried on the next round
                log.exception("reporting to the VTN failed")
            await asyncio.sleep(REPORT_CHECK_S)

    def _queue_due_reports(self, now: datetime) -> None:
        """Build every report that is due and not yet queued, and queue it (persisted)."""
        for event_id, (event, intervals) in list(self._sources.items()):
            known = self.known.get(event_id)
            if known is None or known.status == EventStatus.CANCELLED:
                continue
            program = self.programs.get(event.program_id)
            for index, descriptor in enumerate(event.report_descriptors or ()):
                kind = understand(descriptor, program)
                if isinstance(kind, str):
                    self._log_once(f"report:{event_id}:{index}", logging.WARNING,
                                   "event %s asks for a report drbridge does not offer: %s",
                                   event_id, kind)
                    continue
                groups = self._settings.group_ids
                if descriptor.targets:
                    aimed = match_targets(descriptor.targets, self._names)
                    if aimed is None:
                        continue
                    groups = frozenset(aimed.groups) if not aimed.whole_site else groups
                for batch in batches(descriptor, intervals):
                    if batch.due > now:
                        break
                    key = batch.key(event_id, index, intervals)
                    if self._outbox.seen(key):
                        continue
                    body = report_body(
                        event_id=event_id, program_id=event.program_id,
                        event_name=event.event_name, client_name=self._settings.ven_name,
                        kind=kind, aggregate=bool(descriptor.aggregate),
                        site=self._settings.resource_id, groups=sorted(groups),
                        intervals=intervals, batch=batch, samples=list(self._samples),
                        with_program_id=self._settings.version == "3.0.1")
                    if body is None:
                        log.warning("report %s: no samples in its intervals; nothing to send",
                                    key)
                        self._outbox.settle(key, now)
                        continue
                    self._outbox.put(key, json.dumps(body), now)
                    log.info("report %s queued", key)

    async def _send_reports(self, now: datetime) -> None:
        """Post every queued report the VTN has not accepted; a refused one is retried with
        backoff, never dropped."""
        if not self._registered:
            return
        for key, body in self._outbox.pending():
            due, attempts = self._retry_at.get(key, (now, 0))
            if due > now:
                continue
            try:
                await self._http.post("/reports", json.loads(body))
            except VtnRefused as error:
                wait = min(self._settings.retry_initial * 2 ** attempts,
                           self._settings.retry_max)
                self._retry_at[key] = (now + wait, attempts + 1)
                log.warning("the VTN refused report %s (%s); retrying in %.0f s", key, error,
                            wait.total_seconds())
                continue
            except VtnBadReply:
                pass  # a 2xx with an odd body: the VTN took it
            except VtnUnreachable as error:
                log.warning("report %s not sent: %s; retrying", key, error)
                return
            self._outbox.settle(key, self._clock())
            self._retry_at.pop(key, None)
            log.info("report %s accepted by the VTN", key)

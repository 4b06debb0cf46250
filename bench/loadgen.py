"""Many simulated OCPP 1.6J stations in one process, to load a central system.

    python -m bench.loadgen --url ws://127.0.0.1:9000 --prefix G0- --count 1000 \\
        --mode storm --duration 30 --out /tmp/g0.json

Each station is one asyncio task on a raw ``websockets`` connection: it boots, reports
Charging, starts a transaction and then sends MeterValues, either every ``--meter-interval``
seconds (``storm``/``steady``; the two differ only in the name recorded, the connect pattern
comes from ``--connect-spread``) or back to back (``flood``: the next one as soon as the
previous one is answered). A station has one call of its own outstanding at a time, as OCPP-J
requires, and answers the central system's calls at once: a reader per connection does
that, except in a flood, where the station's own task reads until each reply and answers
what it meets on the way (GetConfiguration, SetChargingProfile, ClearChargingProfile,
GetCompositeSchedule; ChangeConfiguration is refused: its keys are read-only, the meter
interval and measurands among them, which it reports as it samples them).

The generator must cost much less than the server it loads, so it does not use the ``ocpp``
library: frames are f-strings, ids a per-station counter, and replies are matched by id only.
Permessage-deflate is off unless ``--deflate`` is given (chargers rarely negotiate it and it
would dominate both sides' CPU).

The simulated EV draws 16 A per phase (3 x 230 V) or less when the charging profiles it
holds limit it (:mod:`bench.profiles`: OCPP 1.6's stacking, purposes and replacement
rules), and the energy register integrates that power. At the end every station closes
its connection and the process writes one JSON file (``--out``):

    {"prefix", "count", "mode", "started" (the start_at timestamp), "duration",
     "meter_interval", "connect_spread", "finished",
     "cpu_s" (this process's CPU seconds), "lag" ([[unix second, the generator's worst
        event-loop lag in it (s)]], seconds with a lag above 5 ms only: when the
        generator itself was late, its latencies are too),
     "stations": {station id: {
        "t_connect_start", "t_open", "t_booted", "t_tx", "t_closed"  (unix time, first
            occurrence; t_closed the last; null when it never happened),
        "connects" (websocket opens), "boot_status", "tx_id",
        "meter_sent", "meter_replies", "meter_errors" (CALLERRORs answered to MeterValues),
        "meter_replies_after" (replies to MeterValues sent from --record-after on),
        "meter_latency" (seconds, a uniform sample of at most 200; from --record-after on),
        "meter_log" ([[sent at, seconds to the reply]] of every MeterValues answered, in
            storm/steady mode, from --record-after on; at most 2,000),
        "charging": [what the central system said about profiles, in order:
            {"t" (received), "t_answered" (our answer handed to the socket), "op": "set",
             "connector", "profile" (csChargingProfiles as received)} or
            {"t", "t_answered", "op": "clear", "request"}],
        "limits" ([[t, A per phase or null]]: the composite limit on connector 1 from the
            first connection to the end, as change points; null: no profile limits it),
        "cleared" (ClearChargingProfile calls), "calls" ({action: how many of the central
            system's calls of it came, over all connections}), "n_errors",
            "errors" (the first 5)}}}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import signal
import sys
import time
from typing import Any, NamedTuple

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench.fd_limit import raise_fd_limit
from bench.profiles import (
    PHASES,
    VOLTAGE_V,
    ProfileStack,
    Transaction,
    composite_periods,
    limit_timeline,
    parse_profile,
)

SUBPROTOCOLS = [Subprotocol("ocpp1.6")]
OPEN_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 60.0
MAX_QUEUE = 8
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 4.0
MAX_LATENCIES = 200
MAX_METER_LOG = 2_000
MAX_ERRORS = 5
LAG_SAMPLE_S = 0.1
LAG_WORTH_RECORDING_S = 0.005
# Past the last station's end: time for the closing handshakes before the stragglers are cut.
FINISH_GRACE_S = CLOSE_TIMEOUT_S + 10.0

EV_MAX_A = 16.0
DEFAULT_LIMIT_A = 32.0
CONNECTOR = 1

BOOT = '"BootNotification",{"chargePointVendor":"bench","chargePointModel":"lg"}]'
STATUS = '"StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Charging"}]'
# MeterValues after the '[2,"<id>",' and the per-transaction head: timestamp, then values.
_SV = '{"context":"Sample.Periodic","measurand":'
MV_POWER = '","sampledValue":[' + _SV + '"Power.Active.Import","unit":"W","value":"'
MV_ENERGY = '"},' + _SV + '"Energy.Active.Import.Register","unit":"Wh","value":"'
MV_L1 = '"},' + _SV + '"Current.Import","phase":"L1","unit":"A","value":"'
MV_L2 = '"},' + _SV + '"Current.Import","phase":"L2","unit":"A","value":"'
MV_L3 = '"},' + _SV + '"Current.Import","phase":"L3","unit":"A","value":"'
MV_END = '"}]}]}]'
MEASURANDS = "Power.Active.Import,Energy.Active.Import.Register,Current.Import"  # as sent


_iso_second = [-1, ""]  # the last whole second formatted, and its text


def iso(t: float) -> str:
    """Unix time -> ISO 8601 UTC with milliseconds and a Z."""
    second = int(t)
    if second != _iso_second[0]:
        _iso_second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_iso_second[1]}.{int(t * 1000) % 1000:03d}Z"


def _r4(t: float | None) -> float | None:
    return None if t is None else round(t, 4)


class Options(NamedTuple):
    url: str
    mode: str
    meter_interval: float
    rate_unit: str
    deflate: bool
    record_after: float = 0.0  # unix time: latencies of MeterValues sent before are not kept


class Finished(Exception):
    """The station's end time came while it waited for a reply."""


class LoadCallFailed(Exception):
    """A simulated station's call to the bridge got a CALLERROR or no reply in
    CALL_TIMEOUT_S."""


class Dropped(Exception):
    """The connection closed while a call waited for its reply."""


class Station:
    def __init__(self, station_id: str, options: Options, t_begin: float, t_end: float) -> None:
        self.id = station_id
        self.uri = f"{options.url.rstrip('/')}/{station_id}"
        self.opts = options
        self.t_begin, self.t_end = t_begin, t_end
        self.rec: dict[str, Any] = {
            "t_connect_start": None, "t_open": None, "t_booted": None, "t_tx": None,
            "t_closed": None, "connects": 0, "boot_status": None, "tx_id": None,
            "meter_sent": 0, "meter_replies": 0, "meter_replies_after": 0, "meter_errors": 0,
            "meter_latency": [],
            "meter_log": [], "charging": [], "limits": [], "cleared": 0, "calls": {},
            "n_errors": 0, "errors": [],
        }
        self._counter = 0
        self._pending_id: str | None = None
        self._waiter: asyncio.Future[list[Any] | None] | None = None
        self._stack = ProfileStack()
        self._tx: Transaction | None = None
        self._answered: dict[str, Any] | None = None  # the record of the call being answered
        self._tx_head = ""
        self._energy_wh = 0.0
        self._last_sample: float | None = None
        self._last_power = 0.0

    # bookkeeping -----------------------------------------------------------------------------
    def error(self, text: str) -> None:
        self.rec["n_errors"] += 1
        if len(self.rec["errors"]) < MAX_ERRORS:
            self.rec["errors"].append(f"{round(time.time(), 3)} {text}"[:300])

    def _first(self, key: str) -> None:
        if self.rec[key] is None:
            self.rec[key] = time.time()

    def _latency(self, sent_at: float, seconds: float) -> None:
        if self.opts.mode != "flood" and len(self.rec["meter_log"]) < MAX_METER_LOG:
            self.rec["meter_log"].append([round(sent_at, 4), round(seconds, 5)])
        sample = self.rec["meter_latency"]
        n = self.rec["meter_replies"]  # replies so far, this one included
        if len(sample) < MAX_LATENCIES:
            sample.append(round(seconds, 5))
        else:  # reservoir: every reply has the same chance to be kept
            j = random.randrange(n)
            if j < MAX_LATENCIES:
                sample[j] = round(seconds, 5)

    def result(self) -> dict[str, Any]:
        rec = self.rec
        if rec["t_open"] is not None:
            rec["limits"] = [[round(t, 4), None if a is None else round(a, 3)]
                             for t, a in limit_timeline(rec["charging"], rec["t_open"],
                                                        time.time(), CONNECTOR, self._tx)]
        for key in ("t_connect_start", "t_open", "t_booted", "t_tx", "t_closed"):
            rec[key] = _r4(rec[key])
        return rec

    # lifecycle -------------------------------------------------------------------------------
    async def run(self) -> None:
        await asyncio.sleep(max(self.t_begin - time.time(), 0.0))
        backoff = BACKOFF_MIN_S
        while (remaining := self.t_end - time.time()) > 0:
            self._first("t_connect_start")
            try:
                ws = await connect(
                    self.uri,
                    subprotocols=SUBPROTOCOLS,
                    compression="deflate" if self.opts.deflate else None,
                    open_timeout=min(OPEN_TIMEOUT_S, remaining),
                    ping_interval=None,
                    close_timeout=CLOSE_TIMEOUT_S,
                    max_queue=MAX_QUEUE,
                    proxy=None,
                    user_agent_header=None,
                )
            except Exception as error:  # refused, timed out, handshake refused
                self.error(f"connect: {type(error).__name__}: {error}")
                await asyncio.sleep(max(min(backoff, self.t_end - time.time()), 0.0))
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
            self.rec["connects"] += 1
            self._first("t_open")
            try:
                await self._session(ws)
                return  # ran to the end
            except Finished:
                return
            except (ConnectionClosed, Dropped, LoadCallFailed, OSError) as error:
                self.error(f"session: {type(error).__name__}: {error}")
            finally:
                await ws.close()
                self.rec["t_closed"] = time.time()
            # dropped or refused: boot again after a pause
            await asyncio.sleep(max(min(backoff, self.t_end - time.time()), 0.0))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _session(self, ws: ClientConnection) -> None:
        if self.opts.mode == "flood":
            # one task reads and writes, no reader beside it: see _call_inline
            try:
                async with asyncio.timeout(max(self.t_end - time.time(), 0.0)):
                    await self._calls(ws)
            except TimeoutError:
                raise Finished() from None
            return
        reader = asyncio.create_task(self._read(ws))
        try:
            await self._calls(ws)
        finally:
            if not reader.done():
                await ws.close()  # ends the reader's loop
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _calls(self, ws: ClientConnection) -> None:
        """Boot, report Charging, start a transaction, then MeterValues until the end."""
        boot = await self._call(ws, BOOT)
        self._first("t_booted")
        self.rec["boot_status"] = boot.get("status")
        await self._call(ws, STATUS)
        started = await self._call(
            ws,
            '"StartTransaction",{"connectorId":1,"idTag":"BENCH","meterStart":0,'
            f'"timestamp":"{iso(time.time())}"}}]',
        )
        transaction_id = int(started["transactionId"])
        self._first("t_tx")
        self.rec["tx_id"] = transaction_id
        self._tx = Transaction(transaction_id, CONNECTOR, time.time())
        self._tx_head = (f'"MeterValues",{{"connectorId":1,"transactionId":{transaction_id},'
                         '"meterValue":[{"timestamp":"')
        if self.opts.mode == "flood":
            while time.time() < self.t_end:
                await self._meter(ws)
        else:
            await self._periodic(ws)

    async def _periodic(self, ws: ClientConnection) -> None:
        interval = self.opts.meter_interval
        due = time.time() + random.uniform(0.0, interval)
        while due < self.t_end:
            await asyncio.sleep(max(due - time.time(), 0.0))
            await self._meter(ws)
            due = max(due + interval, time.time())  # late: no burst of catch-up samples
        await asyncio.sleep(max(self.t_end - time.time(), 0.0))  # connected until the end

    # our calls -------------------------------------------------------------------------------
    async def _call(self, ws: ClientConnection, rest: str) -> dict[str, Any]:
        """Send '[2,"<id>",' + rest and wait for the matching reply's payload."""
        if self.opts.mode == "flood":
            return await self._call_inline(ws, rest)
        self._counter += 1
        unique_id = str(self._counter)
        waiter = asyncio.get_running_loop().create_future()
        self._pending_id, self._waiter = unique_id, waiter
        try:
            await ws.send(f'[2,"{unique_id}",{rest}')
            wait = min(CALL_TIMEOUT_S, self.t_end - time.time())
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    frame = await waiter
            except TimeoutError:
                if time.time() >= self.t_end - 1e-3:
                    raise Finished() from None
                raise LoadCallFailed(f"no reply in {CALL_TIMEOUT_S:g} s") from None
        finally:
            self._pending_id = self._waiter = None
        if frame is None:
            raise Dropped(f"connection closed ({ws.close_code})")
        return self._reply_payload(frame)

    async def _call_inline(self, ws: ClientConnection, rest: str) -> dict[str, Any]:
        """:meth:`_call` without a reader task: send, then read until the reply, answering
        the central system's calls read meanwhile. A flood always has a call out, so nothing
        waits longer for it. It saves a task switch, a future and a timer per MeterValues:
        against the lean CSMS (``bench.upstream_cs``), 200 stations, 38 µs of the
        generator's CPU per MeterValues instead of 47. The end of the session times it out."""
        self._counter += 1
        unique_id = str(self._counter)
        await ws.send(f'[2,"{unique_id}",{rest}')
        while True:
            try:
                text = await ws.recv()
            except ConnectionClosed:
                raise Dropped(f"connection closed ({ws.close_code})") from None
            frame = self._decoded(text)
            if frame is None:
                continue
            kind = frame[0]
            if (kind == 3 or kind == 4) and len(frame) > 2 and frame[1] == unique_id:
                return self._reply_payload(frame)
            await self._take(ws, frame)

    @staticmethod
    def _reply_payload(frame: list[Any]) -> dict[str, Any]:
        if frame[0] == 4:
            raise LoadCallFailed(f"CALLERROR {frame[2:4]}")
        payload = frame[2]
        return payload if isinstance(payload, dict) else {}

    async def _meter(self, ws: ClientConnection) -> None:
        now = time.time()
        amps = self._amps(now)
        power = amps * VOLTAGE_V * PHASES
        if self._last_sample is not None:  # the power reported last held until now
            self._energy_wh += self._last_power * (now - self._last_sample) / 3600.0
        self._last_sample, self._last_power = now, power
        a = f"{amps:.1f}"
        rest = (f"{self._tx_head}{iso(now)}{MV_POWER}{power:.0f}{MV_ENERGY}{self._energy_wh:.1f}"
                f"{MV_L1}{a}{MV_L2}{a}{MV_L3}{a}{MV_END}")
        self.rec["meter_sent"] += 1
        sent = time.perf_counter()
        try:
            await self._call(ws, rest)
        except LoadCallFailed as error:
            self.rec["meter_errors"] += 1
            self.error(f"MeterValues: {error}")
            return
        self.rec["meter_replies"] += 1
        if now >= self.opts.record_after:
            self.rec["meter_replies_after"] += 1
            self._latency(now, time.perf_counter() - sent)

    def _amps(self, now: float) -> float:
        limit = self._stack.limit_a(now, CONNECTOR, self._tx)
        return EV_MAX_A if limit is None else max(min(limit, EV_MAX_A), 0.0)

    # the central system's calls --------------------------------------------------------------
    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for text in ws:
                frame = self._decoded(text)
                if frame is None:
                    continue
                kind = frame[0]
                if kind == 3 or kind == 4:
                    waiter = self._waiter
                    if (waiter is not None and len(frame) > 2 and frame[1] == self._pending_id
                            and not waiter.done()):
                        waiter.set_result(frame)
                else:
                    await self._take(ws, frame)
        except ConnectionClosed:
            pass
        finally:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # the connection dropped: _call raises Dropped

    def _decoded(self, text: str | bytes) -> list[Any] | None:
        """A frame read, or None (recorded as an error) when it is none."""
        try:
            frame = json.loads(text)
            frame[0]
        except (ValueError, TypeError, IndexError, KeyError):
            self.error(f"unreadable frame {str(text)[:80]!r}")
            return None
        return frame  # type: ignore[no-any-return]

    async def _take(self, ws: ClientConnection, frame: list[Any]) -> None:
        """A frame that is no reply to a call of ours: the central system's call, answered at
        once, or an unexpected frame, recorded."""
        if frame[0] != 2:
            self.error(f"unexpected frame {str(frame)[:80]!r}")
            return
        await ws.send(self._answer(frame))
        if self._answered is not None:  # the answer is with the kernel now
            self._answered["t_answered"] = round(time.time(), 4)
            self._answered = None

    def _answer(self, frame: list[Any]) -> str:
        self._answered = None
        unique_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else "-1"
        try:
            action = frame[2]
            calls = self.rec["calls"]
            calls[str(action)] = calls.get(str(action), 0) + 1
            payload = frame[3] if isinstance(frame[3], dict) else {}
            reply = self._handle(action, payload)
        except (IndexError, KeyError, TypeError, ValueError) as error:
            self.error(f"bad call {str(frame)[:80]}: {type(error).__name__}")
            return json.dumps([4, unique_id, "FormationViolation", str(error)[:100], {}],
                              separators=(",", ":"))
        if reply is None:
            return f'[4,{json.dumps(unique_id)},"NotImplemented","",{{}}]'
        return json.dumps([3, unique_id, reply], separators=(",", ":"))

    def _handle(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        if action == "SetChargingProfile":
            now = time.time()
            connector = int(payload["connectorId"])
            profile = payload["csChargingProfiles"]
            record = {"t": round(now, 4), "t_answered": None, "op": "set",
                      "connector": connector, "profile": profile}
            try:
                self._stack.install(parse_profile(connector, profile, now))
            except (KeyError, TypeError, ValueError) as error:
                self.error(f"unreadable profile: {type(error).__name__}: {error}")
                return {"status": "Rejected"}
            self.rec["charging"].append(record)
            self._answered = record
            return {"status": "Accepted"}
        if action == "ClearChargingProfile":
            record = {"t": round(time.time(), 4), "t_answered": None, "op": "clear",
                      "request": payload}
            self.rec["cleared"] += 1
            self.rec["charging"].append(record)
            self._answered = record
            removed = self._stack.clear(payload)
            return {"status": "Accepted" if removed else "Unknown"}
        if action == "ChangeConfiguration":
            # its keys are read-only: it keeps the meter interval and measurands it was given
            return {"status": "Rejected"}
        if action == "GetConfiguration":
            return self._configuration(payload.get("key"))
        if action == "GetCompositeSchedule":
            start = float(int(time.time()))  # whole seconds: the periods' offsets are
            connector = int(payload.get("connectorId", 0)) or CONNECTOR
            periods = composite_periods(self._stack, start, float(payload.get("duration", 0)),
                                        connector, self._tx, DEFAULT_LIMIT_A)
            unit = "W" if payload.get("chargingRateUnit") == "W" else "A"
            scale = VOLTAGE_V * PHASES if unit == "W" else 1.0
            return {
                "status": "Accepted",
                "connectorId": payload.get("connectorId", 0),
                "scheduleStart": iso(start),
                "chargingSchedule": {
                    "duration": int(payload.get("duration", 0)),
                    "startSchedule": iso(start),
                    "chargingRateUnit": unit,
                    "chargingSchedulePeriod": [{"startPeriod": offset,
                                                "limit": round(limit * scale, 1)}
                                               for offset, limit in periods],
                },
            }
        return None

    def _configuration(self, keys: list[str] | None) -> dict[str, Any]:
        known = {
            "ChargingScheduleAllowedChargingRateUnit": self.opts.rate_unit,
            "ChargeProfileMaxStackLevel": "8",
            "ChargingScheduleMaxPeriods": "24",
            "MaxChargingProfilesInstalled": "8",
            "SupportedFeatureProfiles": "Core,SmartCharging",
            "NumberOfConnectors": "1",
            "MeterValueSampleInterval": f"{self.opts.meter_interval:g}",
            "MeterValuesSampledData": MEASURANDS,
        }
        asked = list(known) if not keys else [str(k) for k in keys]
        return {
            "configurationKey": [{"key": k, "readonly": True, "value": known[k]}
                                 for k in asked if k in known],
            "unknownKey": [k for k in asked if k not in known],
        }


async def watch_lag(worst: dict[int, float]) -> None:
    """Forever: how late this process's event loop wakes a task, worst per second (only the
    seconds above LAG_WORTH_RECORDING_S). A late generator sends late and reads replies
    late: the benchmark checks its windows against this."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LAG_SAMPLE_S
        await asyncio.sleep(LAG_SAMPLE_S)
        lag = loop.time() - due
        if lag > LAG_WORTH_RECORDING_S:
            second = int(time.time())
            worst[second] = max(worst.get(second, 0.0), lag)


async def run(args: argparse.Namespace, stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Run the stations; ``stop`` (by default SIGTERM) ends them early, results kept."""
    started = float(args.start_at) if args.start_at is not None else time.time()
    options = Options(args.url, args.mode, args.meter_interval, args.rate_unit, args.deflate,
                      args.record_after)
    stations = []
    for i in range(args.count):
        offset = args.connect_spread * i / args.count if args.connect_spread > 0 else 0.0
        stations.append(Station(f"{args.prefix}{i:05d}", options, started + offset,
                                started + offset + args.duration))
    lag: dict[int, float] = {}
    watcher = asyncio.create_task(watch_lag(lag))
    tasks = [asyncio.create_task(s.run()) for s in stations]
    # SIGTERM ends the run early (a harness that measured what it wanted): the stations are
    # cut, and the results written as usual.
    if stop is None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    stopped = asyncio.create_task(stop.wait())
    everyone = asyncio.gather(*tasks, return_exceptions=True)
    last_end = started + args.connect_spread + args.duration
    await asyncio.wait({everyone, stopped}, return_when=asyncio.FIRST_COMPLETED,
                       timeout=max(last_end + FINISH_GRACE_S - time.time(), 0.0))
    stopped.cancel()
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)
    for station, task in zip(stations, tasks, strict=True):
        if not task.done():
            station.error("task did not finish")
        elif task.cancelled():
            if not stop.is_set():
                station.error("cut at the end of the run")
        elif task.exception() is not None:
            error = task.exception()
            station.error(f"crashed: {type(error).__name__}: {error}")
    watcher.cancel()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "prefix": args.prefix,
        "count": args.count,
        "mode": args.mode,
        "started": started,
        "duration": args.duration,
        "meter_interval": args.meter_interval,
        "connect_spread": args.connect_spread,
        "finished": round(time.time(), 4),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "lag": [[second, round(worst, 4)] for second, worst in sorted(lag.items())],
        "stations": {s.id: s.result() for s in stations},
    }


def summary(result: dict[str, Any]) -> str:
    records = list(result["stations"].values())
    booted = sum(1 for r in records if r["t_booted"] is not None)
    replies = sum(r["meter_replies"] for r in records)
    errors = sum(r["n_errors"] for r in records)
    latencies = sorted(x for r in records for x in r["meter_latency"])
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    return (f"loadgen {result['prefix']} {result['mode']}: {booted}/{len(records)} booted, "
            f"{replies} MeterValues answered ({replies / result['duration']:.0f}/s), "
            f"latency p50 {p50:.1f} ms p99 {p99:.1f} ms, {errors} errors")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="ws://host:port (the station id is appended)")
    parser.add_argument("--prefix", default="G0-", help="station id prefix (default G0-)")
    parser.add_argument("--count", type=int, required=True, help="number of stations")
    parser.add_argument("--mode", choices=("storm", "steady", "flood"), default="steady")
    parser.add_argument("--meter-interval", type=float, default=10.0,
                        help="seconds between MeterValues in storm/steady (default 10)")
    parser.add_argument("--duration", type=float, required=True,
                        help="seconds each station runs after its start")
    parser.add_argument("--start-at", type=float, default=None,
                        help="unix time to start (default now)")
    parser.add_argument("--connect-spread", type=float, default=0.0,
                        help="spread the connects uniformly over this many seconds (default 0)")
    parser.add_argument("--out", required=True, help="results JSON file")
    parser.add_argument("--rate-unit", default="Current",
                        help="ChargingScheduleAllowedChargingRateUnit to report (default Current)")
    parser.add_argument("--deflate", action="store_true",
                        help="offer permessage-deflate (off by default)")
    parser.add_argument("--record-after", type=float, default=0.0,
                        help="unix time: keep latencies of MeterValues sent from then on only")
    args = parser.parse_args(argv)
    if args.count < 1 or args.duration <= 0 or args.meter_interval <= 0 or args.connect_spread < 0:
        parser.error("--count, --duration and --meter-interval must be positive, "
                     "--connect-spread not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_fd_limit()
    if limit != resource.RLIM_INFINITY and limit < args.count + 64:
        print(f"loadgen: warning: {args.count} stations but only {limit} file descriptors",
              file=sys.stderr)
    result = asyncio.run(run(args))
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(result, out, separators=(",", ":"))
    print(summary(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

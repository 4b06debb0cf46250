"""Hand-written OpenADR 2.0b oadrDistributeEvent payloads, as any VTN may send them.

Written independently of openleadr's templates, so the VEN is tested against the schema's
shapes (several signals and intervals, item bases, targets, tolerance) and not only against
what openleadr itself happens to produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

NAMESPACES = (
    'xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07" '
    'xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110" '
    'xmlns:pyld="http://docs.oasis-open.org/ns/energyinterop/201110/payloads" '
    'xmlns:emix="http://docs.oasis-open.org/ns/emix/2011/06" '
    'xmlns:xcal="urn:ietf:params:xml:ns:icalendar-2.0" '
    'xmlns:strm="urn:ietf:params:xml:ns:icalendar-2.0:stream" '
    'xmlns:power="http://docs.oasis-open.org/ns/emix/2011/06/power" '
    'xmlns:scale="http://docs.oasis-open.org/ns/emix/2011/06/siscale"'
)


def when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def iso_duration(value: timedelta) -> str:
    return f"PT{int(value.total_seconds())}S"


@dataclass
class Signal:
    name: str
    type: str
    values: list[tuple[timedelta, float]]  # consecutive (duration, payload)
    item: str = ""  # itemBase XML, e.g. from price() or power_real()
    signal_id: str = ""


def price(currency: str = "EUR", scale: str = "none") -> str:
    return (f"<oadr:currencyPerKWh><oadr:itemDescription>currencyPerKWh</oadr:itemDescription>"
            f"<oadr:itemUnits>{currency}</oadr:itemUnits>"
            f"<scale:siScaleCode>{scale}</scale:siScaleCode></oadr:currencyPerKWh>")


def power_real(unit: str = "W", scale: str = "k") -> str:
    return (f"<power:powerReal><power:itemDescription>RealPower</power:itemDescription>"
            f"<power:itemUnits>{unit}</power:itemUnits>"
            f"<scale:siScaleCode>{scale}</scale:siScaleCode>"
            "<power:powerAttributes><power:hertz>50</power:hertz><power:voltage>230</power:voltage>"
            "<power:ac>true</power:ac></power:powerAttributes></power:powerReal>")


@dataclass
class Event:
    event_id: str
    start: datetime
    signals: list[Signal]
    modification: int = 0
    status: str = "far"
    duration: timedelta | None = None  # default: the sum of the first signal's intervals
    response_required: str = "always"
    targets: dict[str, list[str]] = field(default_factory=dict)  # venID/resourceID/...
    start_after: timedelta | None = None
    ramp_up: timedelta | None = None
    recovery: timedelta | None = None
    market_context: str = "http://market.example.com/dr"

    def xml(self) -> str:
        duration = self.duration if self.duration is not None else sum(
            (d for d, _ in self.signals[0].values), timedelta())
        props = [f"<xcal:dtstart><xcal:date-time>{when(self.start)}</xcal:date-time>"
                 "</xcal:dtstart>",
                 f"<xcal:duration><xcal:duration>{iso_duration(duration)}</xcal:duration>"
                 "</xcal:duration>"]
        if self.start_after is not None:
            props.append(f"<xcal:tolerance><xcal:tolerate><xcal:startafter>"
                         f"{iso_duration(self.start_after)}</xcal:startafter></xcal:tolerate>"
                         "</xcal:tolerance>")
        props.append("<ei:x-eiNotification><xcal:duration>PT0S</xcal:duration>"
                     "</ei:x-eiNotification>")
        if self.ramp_up is not None:
            props.append(f"<ei:x-eiRampUp><xcal:duration>{iso_duration(self.ramp_up)}"
                         "</xcal:duration></ei:x-eiRampUp>")
        if self.recovery is not None:
            props.append(f"<ei:x-eiRecovery><xcal:duration>{iso_duration(self.recovery)}"
                         "</xcal:duration></ei:x-eiRecovery>")
        signals = "".join(self._signal(i, s) for i, s in enumerate(self.signals))
        order = ("groupID", "resourceID", "venID", "partyID")
        targets = "".join(f"<ei:{kind}>{value}</ei:{kind}>"
                          for kind in order for value in self.targets.get(kind, []))
        return (
            "<oadr:oadrEvent><ei:eiEvent><ei:eventDescriptor>"
            f"<ei:eventID>{self.event_id}</ei:eventID>"
            f"<ei:modificationNumber>{self.modification}</ei:modificationNumber>"
            "<ei:priority>1</ei:priority>"
            f"<ei:eiMarketContext><emix:marketContext>{self.market_context}</emix:marketContext>"
            "</ei:eiMarketContext>"
            f"<ei:createdDateTime>{when(datetime.now(UTC))}</ei:createdDateTime>"
            f"<ei:eventStatus>{self.status}</ei:eventStatus>"
            "<ei:testEvent>false</ei:testEvent>"
            "</ei:eventDescriptor>"
            f"<ei:eiActivePeriod><xcal:properties>{''.join(props)}</xcal:properties>"
            "<xcal:components/></ei:eiActivePeriod>"
            f"<ei:eiEventSignals>{signals}</ei:eiEventSignals>"
            f"<ei:eiTarget>{targets}</ei:eiTarget>"
            "</ei:eiEvent>"
            f"<oadr:oadrResponseRequired>{self.response_required}</oadr:oadrResponseRequired>"
            "</oadr:oadrEvent>"
        )

    def _signal(self, index: int, signal: Signal) -> str:
        intervals = "".join(
            "<ei:interval>"
            f"<xcal:duration><xcal:duration>{iso_duration(d)}</xcal:duration></xcal:duration>"
            f"<xcal:uid><xcal:text>{i}</xcal:text></xcal:uid>"
            f"<ei:signalPayload><ei:payloadFloat><ei:value>{v}</ei:value></ei:payloadFloat>"
            "</ei:signalPayload></ei:interval>"
            for i, (d, v) in enumerate(signal.values))
        return (
            f"<ei:eiEventSignal><strm:intervals>{intervals}</strm:intervals>"
            f"<ei:signalName>{signal.name}</ei:signalName>"
            f"<ei:signalType>{signal.type}</ei:signalType>"
            f"<ei:signalID>{signal.signal_id or f'{self.event_id}-s{index}'}</ei:signalID>"
            f"{signal.item}"
            f"<ei:currentValue><ei:payloadFloat><ei:value>{signal.values[0][1]}</ei:value>"
            "</ei:payloadFloat></ei:currentValue>"
            "</ei:eiEventSignal>"
        )


def distribute_event(events: list[Event], vtn_id: str = "DEMO-VTN",
                     request_id: str = "req-1") -> bytes:
    body = "".join(e.xml() for e in events)
    return (
        f'<?xml version="1.0" encoding="utf-8"?><oadr:oadrPayload {NAMESPACES}>'
        '<oadr:oadrSignedObject><oadr:oadrDistributeEvent ei:schemaVersion="2.0b">'
        "<ei:eiResponse><ei:responseCode>200</ei:responseCode>"
        "<ei:responseDescription>OK</ei:responseDescription>"
        "<pyld:requestID/></ei:eiResponse>"
        f"<pyld:requestID>{request_id}</pyld:requestID><ei:vtnID>{vtn_id}</ei:vtnID>{body}"
        "</oadr:oadrDistributeEvent></oadr:oadrSignedObject></oadr:oadrPayload>"
    ).encode()

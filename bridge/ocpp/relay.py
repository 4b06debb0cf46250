"""The message path between the bridge and its OCPP edge workers, without I/O.

With ``ocpp.workers`` set, the stations' websockets end in worker processes
(:mod:`bridge.ocpp.edge_worker`): they do the TLS, the HTTP handshake, the websocket framing
and the keepalive pings, which are most of what thousands of connections cost. Everything
OCPP stays in the bridge: the handshake's verdict (station id, password, certificate,
per-address limits), every frame's reading and answer, and the profiles. The two talk over
one Unix socket per worker, in messages of this form::

    length (4 bytes, big-endian: what follows)  kind (1 byte)  connection (4 bytes)  body

A worker numbers its connections; ``connection`` names one within that worker. Messages
are small and many (one per OCPP frame), so each side joins those of one loop turn into a
single write, and :class:`Decoder` reads them back from any split of the stream.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

HEADER = struct.Struct("!IBI")
# the length counts the kind and the connection too
_AFTER_LENGTH = HEADER.size - 4
# A frame is at most ocpp.security.max_message_bytes (websockets enforces it in the worker);
# a message far above any frame means the stream is out of step, and is not buffered.
MAX_BODY_BYTES = 16 * 1024 * 1024


class Kind(IntEnum):
    # worker -> bridge
    READY = 1  # the worker accepts connections (connection 0; body: its process id)
    CONNECTED = 2  # a socket was accepted, nothing read from it yet: JSON {host}
    HELLO = 3  # its handshake request, to judge: JSON {path, authorization, peercert}
    OPENED = 4  # the handshake was answered 101: JSON {subprotocol}
    FRAME = 5  # a text frame from the station (UTF-8)
    CLOSED = 6  # the connection is gone, at whatever stage: JSON {code, reason}
    # bridge -> worker
    ADMISSION = 7  # the answer to CONNECTED: JSON {admitted}; refused: the socket is dropped
    VERDICT = 8  # the answer to HELLO: JSON {status, headers}; status 0 lets it go on
    SEND = 9  # a text frame to the station (UTF-8)
    CLOSE = 10  # close the websocket: JSON {code, reason}
    PAUSE = 11  # stop reading the station's frames: the bridge holds enough of them unread
    RESUME = 12  # read them again


# VERDICT status: 0 lets the handshake go on; anything else is the HTTP status of a refusal.
ACCEPT = 0


class RelayError(Exception):
    """The stream between bridge and worker is out of step (a bug, or a stray peer)."""


def encode(kind: Kind, connection: int, body: bytes) -> bytes:
    return HEADER.pack(len(body) + _AFTER_LENGTH, kind, connection) + body


def encode_json(kind: Kind, connection: int, value: Any) -> bytes:
    return encode(kind, connection, json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    connection: int
    body: bytes

    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


class Decoder:
    """Messages from a byte stream, however it was split into reads."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """The messages ``data`` completes, in order; raises RelayError on a stream out of
        step (an unknown kind, or a length no message has)."""
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        start, end = 0, len(buffer)
        while end - start >= HEADER.size:
            length, kind, connection = HEADER.unpack_from(buffer, start)
            if length < _AFTER_LENGTH or length - _AFTER_LENGTH > MAX_BODY_BYTES:
                raise RelayError(f"a message of {length} bytes")
            stop = start + 4 + length
            if stop > end:
                break
            try:
                known = Kind(kind)
            except ValueError:
                raise RelayError(f"unknown message kind {kind}") from None
            messages.append(Message(known, connection, bytes(buffer[start + HEADER.size:stop])))
            start = stop
        del buffer[:start]
        return messages

"""The station edge's security settings, read from the config (``ocpp.security``)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from bridge.ocpp.limits import ConnectionPolicy, FailurePolicy
from bridge.ocpp.tls import server_context

if TYPE_CHECKING:
    from bridge.config import Config

DEFAULT_MAX_MESSAGE_BYTES = 131_072
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})


@dataclass(frozen=True)
class EdgeSecurity:
    profile: int = 0
    ssl_context: ssl.SSLContext | None = None
    # the files it was made of (certificate, private key, client CA): edge workers make
    # their own from them
    tls_files: tuple[Path, Path, Path | None] | None = None
    password_hashes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    failures: FailurePolicy = FailurePolicy()
    connections: ConnectionPolicy = ConnectionPolicy()

    @property
    def scheme(self) -> str:
        return "ws" if self.ssl_context is None else "wss"

    @classmethod
    def from_config(cls, config: Config) -> EdgeSecurity:
        ocpp = config.model.ocpp
        section = ocpp.security
        context, files = None, None
        if section.profile in (2, 3):
            # load_config has checked these are present and loadable
            assert section.tls_certificate is not None and section.tls_private_key is not None
            files = (config.resolve(section.tls_certificate),
                     config.resolve(section.tls_private_key),
                     config.resolve(section.tls_client_ca)
                     if section.profile == 3 and section.tls_client_ca else None)
            context = server_context(*files)
        return cls(
            profile=section.profile,
            ssl_context=context,
            tls_files=files,
            password_hashes=MappingProxyType({
                s.id: s.password_hash for s in ocpp.stations if s.password_hash is not None
            }),
            max_message_bytes=section.max_message_bytes,
            failures=FailurePolicy(
                per_station=section.max_auth_failures,
                per_address=section.max_auth_failures_per_address,
                window_s=section.auth_failure_window_s,
                block_s=section.auth_block_s,
            ),
            connections=ConnectionPolicy(
                max_open=section.max_connections_per_address,
                max_per_second=section.max_new_connections_per_s,
                limit_loopback=section.limit_loopback,
            ),
        )


class RedactCredentials(logging.Filter):
    """websockets logs every handshake header at debug level; blank out the credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], str)
                and args[0].lower() in _SECRET_HEADERS):
            record.args = (args[0], "[redacted]")
        return True


def websockets_logger() -> logging.Logger:
    """The logger the station server hands to websockets: a child of ``websockets.server``,
    so the levels set for websockets apply, with credentials redacted."""
    logger = logging.getLogger("websockets.server.ocpp")
    if not any(isinstance(f, RedactCredentials) for f in logger.filters):
        logger.addFilter(RedactCredentials())
    return logger

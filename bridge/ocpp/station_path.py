"""Which station a connection is: the last segment of the websocket's request path."""

from __future__ import annotations

from urllib.parse import unquote


def station_id_from_path(path: str) -> str | None:
    """The last path segment, URL-decoded; None when empty."""
    segment = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    station_id = unquote(segment)
    return station_id or None

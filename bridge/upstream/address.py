"""Where a station's upstream link goes: the operator's address for one station id.

Most central systems take the station id as the last path segment (``<url>/<id>``); some
route on a path that goes on after it (``.../ocpp/<id>/``), which the configured url says
by naming ``{station_id}`` where the id belongs.
"""

from __future__ import annotations

STATION_ID_FIELD = "{station_id}"


def station_url(url: str, station_id: str) -> str:
    """The websocket url of ``station_id``'s link, for a configured ``ocpp.upstream.url``."""
    if STATION_ID_FIELD in url:
        return url.replace(STATION_ID_FIELD, station_id)
    return f"{url}/{station_id}"

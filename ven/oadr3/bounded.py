"""Reading a reply's body to its end, within a bound."""

from __future__ import annotations

import aiohttp


async def read_bounded(reply: aiohttp.ClientResponse, limit: int) -> bytes:
    """The reply's body, read to its end but to at most ``limit + 1`` bytes (more than
    ``limit`` means too large)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await reply.content.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)

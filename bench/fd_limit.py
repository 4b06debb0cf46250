"""The open-file limit a benchmark process needs: one descriptor per station connection."""

from __future__ import annotations

import resource
import sys


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            print(f"cannot raise RLIMIT_NOFILE: {error}", file=sys.stderr)
    return soft

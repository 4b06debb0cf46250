"""Event lifecycle and targeting decisions. Pure: no I/O, no clock of its own.

What the VEN does with each event of an ``oadrDistributeEvent`` (OpenADR 2.0b):

- a new event, or a higher modificationNumber, replaces what the VEN knew of the event;
- an equal modificationNumber changes nothing (the VTN resends its whole list on every
  change), nor does a lower one (a stale copy), except that a cancellation is never missed;
- an oadrDistributeEvent lists every pending and active event of the VEN, so a known
  event missing from it, and not yet over, has been cancelled implicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from policies.events import DrEvent, EventStatus
from ven.shared import Targeting


class Change(StrEnum):
    NEW = "new"
    MODIFIED = "modified"  # a higher modificationNumber: the new schedule replaces the old
    CANCELLED = "cancelled"
    UNCHANGED = "unchanged"  # equal modificationNumber: ignored, answered as before
    STALE = "stale"  # lower modificationNumber: ignored


def classify(known: DrEvent | None, incoming: DrEvent) -> Change:
    if known is None:
        return Change.NEW
    if incoming.status == EventStatus.CANCELLED and known.status != EventStatus.CANCELLED:
        return Change.CANCELLED
    if incoming.modification_number < known.modification_number:
        return Change.STALE
    if incoming.modification_number == known.modification_number:
        return Change.UNCHANGED
    return Change.MODIFIED


@dataclass(frozen=True)
class SiteTargets:
    """What an eiTarget may name that is this VEN, and the parts of the site it maps."""

    ven_id: str | None
    site_resource_id: str
    resource_ids: frozenset[str] = frozenset()  # configured resources (subsets of stations)
    group_ids: frozenset[str] = frozenset()
    party_ids: frozenset[str] = frozenset()


TARGET_KINDS = ("ven_id", "party_id", "resource_id", "group_id")


def match_targets(targets: Mapping[str, tuple[str, ...]], ours: SiteTargets) -> Targeting | None:
    """Which part of the site an event's eiTarget names; None when none of it is ours.

    No target of a kind the VEN can judge (venID, partyID, resourceID, groupID) means the
    event is for the whole VEN: the VTN sent it to us. Naming this VEN, its party or the
    site's resource id means the whole site; naming configured resources or groups means
    those only.
    """
    named = {kind: set(targets.get(kind, ())) for kind in TARGET_KINDS}
    if not any(named.values()):
        return Targeting(whole_site=True)
    if ours.ven_id is not None and ours.ven_id in named["ven_id"]:
        return Targeting(whole_site=True)
    if named["party_id"] & ours.party_ids or ours.site_resource_id in named["resource_id"]:
        return Targeting(whole_site=True)
    resources = tuple(sorted(named["resource_id"] & ours.resource_ids))
    groups = tuple(sorted(named["group_id"] & ours.group_ids))
    if resources or groups:
        return Targeting(whole_site=False, resources=resources, groups=groups)
    return None

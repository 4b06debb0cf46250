"""Offline authorization: the cache of the operator's answers and the offline policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlite_utils
import websockets
from hypothesis import given
from hypothesis import strategies as st

from bridge.sim.csms import UpstreamCsms
from bridge.upstream.authcache import (
    AuthCache,
    CachedAnswer,
    OfflinePolicy,
    offline_decision,
    token_key,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
statuses = st.sampled_from(["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"])


@pytest.fixture
def cache(tmp_path) -> AuthCache:
    return AuthCache(sqlite_utils.Database(tmp_path / "bridge.db"))


@pytest.mark.parametrize(("policy", "known", "unknown"), [
    (OfflinePolicy.CACHE, "Accepted", "Invalid"),
    (OfflinePolicy.ACCEPT, "Accepted", "Accepted"),
    (OfflinePolicy.REJECT, "Invalid", "Invalid"),
])
def test_policies(cache, policy, known, unknown):
    cache.learn("CARD", {"status": "Accepted"}, NOW)
    assert cache.decide("CARD", policy, NOW).status == known
    assert cache.decide("STRANGER", policy, NOW).status == unknown


def test_a_blocked_card_stays_blocked_even_when_unknown_ids_are_accepted(cache):
    cache.learn("STOLEN", {"status": "Accepted"}, NOW)
    cache.learn("STOLEN", {"status": "Blocked"}, NOW + timedelta(minutes=1))
    decision = cache.decide("STOLEN", OfflinePolicy.ACCEPT, NOW + timedelta(minutes=2))
    assert decision.status == "Blocked"
    assert "operator's answer" in decision.reason


def test_an_expired_answer_counts_as_unknown(cache):
    cache.learn("CARD", {"status": "Accepted", "expiryDate": "2025-06-01T13:00:00Z"}, NOW)
    assert cache.decide("CARD", OfflinePolicy.CACHE, NOW + timedelta(minutes=59)).status \
        == "Accepted"
    assert cache.decide("CARD", OfflinePolicy.CACHE, NOW + timedelta(hours=1)).status == "Invalid"
    assert cache.decide("CARD", OfflinePolicy.ACCEPT, NOW + timedelta(hours=1)).status \
        == "Accepted"
    assert cache.prune(NOW + timedelta(hours=2)) == 1
    assert cache.lookup("CARD") is None


def test_an_answer_without_status_is_not_learnt(cache):
    cache.learn("CARD", {"expiryDate": "2025-06-01T13:00:00Z"}, NOW)
    cache.learn("CARD", {"status": 3}, NOW)
    assert cache.lookup("CARD") is None


def test_persisted_across_a_restart(tmp_path):
    path = tmp_path / "bridge.db"
    AuthCache(sqlite_utils.Database(path)).learn("CARD", {"status": "Accepted"}, NOW)
    again = AuthCache(sqlite_utils.Database(path))
    assert again.decide("CARD", OfflinePolicy.CACHE, NOW).status == "Accepted"


def test_bounded(tmp_path):
    cache = AuthCache(sqlite_utils.Database(tmp_path / "bridge.db"), max_entries=3)
    for i in range(5):
        cache.learn(f"C{i}", {"status": "Accepted"}, NOW + timedelta(seconds=i))
    assert [cache.lookup(f"C{i}") is not None for i in range(5)] == [False, False, True, True,
                                                                    True]


def test_201_tokens_are_told_apart_by_type():
    assert token_key({"idToken": "AB12", "type": "ISO14443"}) != \
        token_key({"idToken": "AB12", "type": "eMAID"})
    assert token_key("AB12") == "AB12"


@given(statuses, st.none() | st.integers(-3600, 3600), st.sampled_from(list(OfflinePolicy)),
       st.integers(0, 7200))
def test_offline_never_accepts_what_the_operator_refused(status, expires_in, policy, later):
    expires = None if expires_in is None else NOW + timedelta(seconds=expires_in)
    cached = CachedAnswer(status, expires, NOW)
    at = NOW + timedelta(seconds=later)
    decision = offline_decision(cached, policy, at)
    still_valid = expires is None or at < expires
    if still_valid and status != "Accepted":
        assert decision.status == status or policy is OfflinePolicy.REJECT
    if policy is OfflinePolicy.REJECT:
        assert decision.status != "Accepted"
    if policy is OfflinePolicy.CACHE and decision.status == "Accepted":
        assert status == "Accepted" and still_valid


async def test_learns_from_a_real_csms_answer(cache):
    csms = UpstreamCsms(id_tags={"GOOD": "Accepted", "STOLEN": "Blocked"},
                        auth_valid_for=timedelta(hours=1))
    await csms.start()
    try:
        async with websockets.connect(f"{csms.url}/CP1", subprotocols=["ocpp1.6"]) as ws:
            for n, tag in enumerate(("GOOD", "STOLEN")):
                await ws.send(json.dumps([2, str(n), "Authorize", {"idTag": tag}]))
                answer = json.loads(await ws.recv())
                cache.learn(tag, answer[2]["idTagInfo"], datetime.now(UTC))
    finally:
        await csms.stop()
    now = datetime.now(UTC)
    assert cache.decide("GOOD", OfflinePolicy.CACHE, now).status == "Accepted"
    assert cache.decide("STOLEN", OfflinePolicy.ACCEPT, now).status == "Blocked"
    assert cache.decide("GOOD", OfflinePolicy.CACHE, now + timedelta(hours=2)).status \
        == "Invalid"

"""Pure parts of the web package: password hashes, sessions, the metrics text format."""

from datetime import UTC, datetime, timedelta

from bridge.web.auth import Sessions, hash_password, verify_password
from bridge.web.metrics import Metric, format_metrics

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_password_hash_round_trip_and_salt():
    first, second = hash_password("s3cret pass"), hash_password("s3cret pass")
    assert first != second  # a fresh salt each time
    assert first.startswith("scrypt$14$8$1$")
    assert verify_password("s3cret pass", first) and verify_password("s3cret pass", second)
    assert not verify_password("s3cret pasS", first)
    assert "s3cret" not in first


def test_sessions_expire_and_end():
    sessions = Sessions(ttl=timedelta(hours=1))
    token = sessions.create(NOW)
    assert sessions.valid(token, NOW + timedelta(minutes=59))
    assert not sessions.valid(token, NOW + timedelta(hours=1))
    assert not sessions.valid(token, NOW)  # expired tokens are forgotten
    other = sessions.create(NOW)
    sessions.end(other)
    assert not sessions.valid(other, NOW)
    assert not sessions.valid(None, NOW) and not sessions.valid("made-up", NOW)


def test_metrics_text_format():
    text = format_metrics([
        Metric("x_watts", "gauge", "A gauge.", (({}, 1500.0),)),
        Metric("y_total", "counter", "By label.",
               (({"action": 'a"b\\c\nd'}, 3.0), ({"action": "z"}, 0.5))),
        Metric("empty", "gauge", "No samples yet."),
        Metric("nan", "gauge", "Not a number.", (({}, float("nan")),)),
    ])
    assert text == (
        "# HELP x_watts A gauge.\n# TYPE x_watts gauge\nx_watts 1500\n"
        "# HELP y_total By label.\n# TYPE y_total counter\n"
        'y_total{action="a\\"b\\\\c\\nd"} 3\ny_total{action="z"} 0.5\n'
        "# HELP empty No samples yet.\n# TYPE empty gauge\n"
        "# HELP nan Not a number.\n# TYPE nan gauge\nnan NaN\n"
    )


def test_thin_keeps_the_lowest_limit_and_the_mean_load():
    from bridge.web.views import thin

    rows = [(NOW + timedelta(seconds=i), float(i), 1_000.0 if i == 7 else 5_000.0)
            for i in range(10)]
    assert thin(rows, 10) == rows
    thinned = thin(rows, 3)
    assert [r[0] for r in thinned] == [NOW, NOW + timedelta(seconds=4),
                                       NOW + timedelta(seconds=8)]
    assert [r[1] for r in thinned] == [1.5, 5.5, 8.5]
    assert [r[2] for r in thinned] == [5_000, 1_000, 5_000]


def test_login_throttle_after_repeated_failures():
    from bridge.web.auth import LoginThrottle

    throttle = LoginThrottle(limit=3, window=timedelta(minutes=5))
    for minute in range(3):
        assert throttle.allowed("10.0.0.9", NOW + timedelta(minutes=minute))
        throttle.failed("10.0.0.9", NOW + timedelta(minutes=minute))
    assert not throttle.allowed("10.0.0.9", NOW + timedelta(minutes=3))
    assert throttle.allowed("10.0.0.8", NOW + timedelta(minutes=3))  # others are not held up
    assert throttle.allowed("10.0.0.9", NOW + timedelta(minutes=5, seconds=1))  # one expired
    throttle.succeeded("10.0.0.9")
    assert throttle.allowed("10.0.0.9", NOW)

"""Pure parts of the web package: password hashes, sessions, the metrics text format."""

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bridge.web
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


def test_login_throttle_memory_is_bounded_and_forgets_the_oldest():
    from bridge.web.auth import LoginThrottle

    throttle = LoginThrottle(limit=2, window=timedelta(minutes=5), max_clients=100)
    for _ in range(2):  # the first client is blocked ...
        throttle.failed("10.0.0.1", NOW)
    assert not throttle.allowed("10.0.0.1", NOW)
    for n in range(10_000):  # ... then a flood of other addresses fails once each
        throttle.failed(f"2001:db8::{n:x}", NOW + timedelta(seconds=1))
    assert len(throttle) == 100
    assert throttle.allowed("10.0.0.1", NOW)  # forgotten: the oldest goes first
    throttle.failed("2001:db8::270f", NOW)  # the newest are still counted
    assert not throttle.allowed("2001:db8::270f", NOW + timedelta(seconds=2))
    for _ in range(50):  # one client's failures are kept to what the limit needs
        throttle.failed("10.0.0.2", NOW)
    assert len(throttle._failures["10.0.0.2"]) == 2


def test_forwarded_addresses_count_only_from_trusted_proxies():
    from bridge.web.transport import TrustedProxies

    proxies = TrustedProxies.parse(["10.0.0.5", "192.168.7.0/24", "fd00::/8"])
    # not a trusted proxy: the peer is the client, whatever it claims
    assert proxies.client("203.0.113.9", ["198.51.100.1"]) == "203.0.113.9"
    assert not proxies.https("203.0.113.9", ["https"])
    # a trusted proxy: the nearest address it forwarded for that is not a proxy itself
    assert proxies.client("10.0.0.5", ["198.51.100.1"]) == "198.51.100.1"
    assert proxies.client("10.0.0.5", ["6.6.6.6, 198.51.100.1, 192.168.7.3"]) == "198.51.100.1"
    assert proxies.client("10.0.0.5", ["6.6.6.6", "198.51.100.1"]) == "198.51.100.1"
    assert proxies.client("::ffff:10.0.0.5", ["2001:db8::1"]) == "2001:db8::1"
    assert proxies.client("10.0.0.5", []) == "10.0.0.5"  # the proxy's own request
    assert proxies.client("10.0.0.5", ["unknown, 198.51.100.1"]) == "198.51.100.1"
    assert proxies.client("10.0.0.5", ["192.168.7.3, garbage"]) == "10.0.0.5"
    assert proxies.client("10.0.0.5", ["192.168.7.3"]) == "192.168.7.3"  # only proxies
    assert proxies.https("10.0.0.5", ["https"]) and proxies.https("10.0.0.5", ["http, HTTPS"])
    assert not proxies.https("10.0.0.5", ["http"]) and not proxies.https("10.0.0.5", [])
    assert TrustedProxies().client(None, ["1.2.3.4"]) == "?"


def _imports(path: Path) -> set[str]:
    """The modules a file imports, also under ``if TYPE_CHECKING``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_web_reads_the_runtime_through_its_port_only():
    web = Path(bridge.web.__file__).parent
    runtime = ("bridge.app", "bridge.runtime", "bridge.dispatch", "bridge.store",
               "bridge.ocpp.server", "bridge.grid", "bridge.telemetry")
    for path in sorted(web.glob("*.py")):
        reached = {name for name in _imports(path) if name.startswith(runtime)}
        assert not reached, f"{path.name} imports {sorted(reached)}"
    # the port itself: nothing of the bridge but the types of the config and of holds
    bridge_imports = {n for n in _imports(web / "port.py") if n.startswith("bridge.")}
    assert bridge_imports <= {"bridge.config", "bridge.holds"}

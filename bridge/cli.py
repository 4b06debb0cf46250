"""The ``drbridge`` command: run, check, demo, opt-out, report, hash-password, ..."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.config import Config, load_config
from bridge.upstream.address import station_url
from policies.validation import InvalidDocument

if TYPE_CHECKING:
    from bridge.store import Store
    from ven.oadr3.probe import Probe

EXIT_INVALID_CONFIG = 2
_PROFILES = {
    0: "profile 0: stations are not authenticated (ws://)",
    1: "profile 1: Basic auth over plain ws:// (trusted networks only)",
    2: "profile 2: TLS (wss://) and Basic auth",
    3: "profile 3: TLS (wss://) with client certificates",
}


def _load(path: Path) -> Config | None:
    try:
        return load_config(path)
    except InvalidDocument as error:
        print(f"drbridge: invalid configuration\n{error}", file=sys.stderr)
        return None


def _where(config: Config, *path: str) -> str:
    """``file:line`` of a key, or of its nearest parent in the file."""
    line = next((config.lines[path[:cut]] for cut in range(len(path), 0, -1)
                 if path[:cut] in config.lines), None)
    return f"{config.source}:{line}" if line else str(config.source)


def _probe_openadr3(config: Config) -> tuple[Probe, list[str]] | None:
    """Ask the OpenADR 3 VTN for a token and its programs. None when it refused the
    credentials (said on stderr: the config is wrong); otherwise what was found, and a
    warning when the VTN could not be reached (the site may be offline while checking)."""
    from ven.oadr3.probe import probe

    found = asyncio.run(probe(config.ven3_settings()))
    auth = config.model.ven.auth
    if found.refused is not None:
        key = ("ven", "auth", "client_id") if auth.client_id else ("ven", "auth",
                                                                   "bearer_token_env")
        variable = auth.client_secret_env or auth.bearer_token_env
        print(f"drbridge: invalid configuration\n{_where(config, *key)}: {'.'.join(key)}: "
              f"the VTN refused these credentials ({found.refused}). Fix: check the client "
              f"id, and the secret in ${variable}, with the utility", file=sys.stderr)
        return None
    if found.unreachable is not None:
        return found, [f"{_where(config, 'ven', 'vtn_url')}: ven.vtn_url: the VTN could not "
                       f"be reached ({found.unreachable}); the configuration is checked "
                       "without it, and `run` retries until it answers"]
    return found, []


def _vtn_lines(config: Config, found: Probe | None) -> list[str]:
    ven = config.model.ven
    if not config.openadr3:
        return [f"  VTN        {ven.vtn_url} as {ven.ven_name} (OpenADR 2.0b)"]
    settings = config.ven3_settings()
    auth = ven.auth
    how = f"OAuth2 client {auth.client_id}" if auth.client_id else \
        f"bearer token from ${auth.bearer_token_env}" if auth.bearer_token_env else \
        "no credentials"
    lines = [f"  VTN        {ven.vtn_url} as {ven.ven_name} (OpenADR {settings.version}, "
             f"{how}; polled every {ven.poll_interval_s:g} s"
             + (f", notified at {ven.webhook.public_url}" if ven.webhook else "") + ")"]
    if found is None:
        lines.append("  programs   (the VTN was not asked: --offline)")
    elif found.reached:
        lines.append(f"  programs   {', '.join(found.programs) or 'none shown to this VEN'}")
    return lines


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(Path(args.config))
    if config is None:
        return EXIT_INVALID_CONFIG
    model = config.model
    found: Probe | None = None
    unreached: list[str] = []
    if config.openadr3 and not args.offline:
        probed = _probe_openadr3(config)
        if probed is None:
            return EXIT_INVALID_CONFIG
        found, unreached = probed
    print(f"{config.source}: OK")
    for line in _vtn_lines(config, found):
        print(line)
    scheme = "wss" if model.ocpp.security.profile in (2, 3) else "ws"
    print(f"  OCPP       {scheme}://{model.ocpp.host}:{model.ocpp.port}/<station id>")
    print(f"  security   {_PROFILES[model.ocpp.security.profile]}")
    upstream = model.ocpp.upstream
    if upstream is not None:
        print(f"  upstream   local controller: forwards to "
              f"{station_url(upstream.url, '<station id>')}; "
              f"offline authorization {upstream.offline_authorization}")
    print(f"  site       {model.site.capacity_kw:g} kW, {model.site.phases} phases, "
          f"{model.site.voltage_v:g} V")
    print(f"  policy     {config.policy.name}: {config.policy.description}")
    policy = config.policy
    print(f"  acts on    {', '.join(sorted(policy.handled_signals)) or 'no signal'}; "
          f"{policy.allocation.strategy} share; {len(config.site.circuits)} circuit(s)")
    if policy.voltage is not None:
        rule = policy.voltage
        curve = ", ".join(f"{pu:g} pu -> {v if v == 'min' else f'{v:.0%}'}"
                          for pu, v in sorted(rule.curve.items()))
        print(f"  voltage    volt-watt per {rule.scope}, {rule.phases} phase: {curve}"
              + (f"; pause below {rule.pause_below:g} pu" if rule.pause_below else "")
              + (f"; pause above {rule.pause_above:g} pu" if rule.pause_above else "")
              + (f"; over-voltage: price signals give way from {rule.over_voltage.start:g} "
                 f"to {rule.over_voltage.full:g} pu" if rule.over_voltage else ""))
    print(f"  storage    {config.storage_path}")
    kept = model.storage.retention
    print("  retention  " + ", ".join(
        f"{what} {'for good' if days is None else f'{days} d'}" for what, days in (
            ("profile log", kept.profiles_days), ("meter samples", kept.samples_days),
            ("plans", kept.plans_days), ("site load", kept.site_load_days),
            ("closed transactions", kept.transactions_days))))
    web = model.web
    if web.enabled:
        access = ("login required to read" if web.login_required
                  else "readable without login") + \
            ("; actions need the operator login" if web.password_hash
             else "; read-only: no password_hash")
        print(f"  dashboard  {web.scheme}://{web.host}:{web.port}/ ({access})")
    for warning in unreached + config.warnings():
        print(f"  WARNING    {warning}")
    return 0


async def _run(config: Config) -> None:
    from bridge.app import Bridge
    from bridge.gc_tuning import tune_for_many_connections
    from bridge.heap import map_large_blocks_apart

    bridge = Bridge(config)
    tune_for_many_connections()
    map_large_blocks_apart()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, bridge.stop)
    await bridge.run()


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(Path(args.config))
    if config is None:
        return EXIT_INVALID_CONFIG
    # the VEN warns of its own transport when it starts
    for warning in config.site_warnings():
        logging.getLogger("drbridge").warning("INSECURE: %s", warning)
    asyncio.run(_run(config))
    logging.getLogger("drbridge").info("stopped; state saved in %s", config.storage_path)
    return 0


def _open_store(args: argparse.Namespace) -> Store | None:
    """The configured site's store, opened beside a running bridge (SQLite WAL allows it)."""
    config = _load(Path(args.config))
    if config is None:
        return None
    from bridge.store import Store

    return Store(config.storage_path)


def cmd_opt_out(args: argparse.Namespace) -> int:
    """Record the opt-out in the store; the running bridge (or the next start) applies it
    within a second, replans without the event and tells the VTN."""
    store = _open_store(args)
    if store is None:
        return EXIT_INVALID_CONFIG
    try:
        known = {e.event.event_id: e for e in store.events()}
        event = known.get(args.event_id)
        now = datetime.now(UTC)
        if event is None:
            print(f"drbridge: no event {args.event_id!r} has been received "
                  f"(known: {', '.join(known) or 'none'})", file=sys.stderr)
            return 1
        if event.event.is_over(now):
            print(f"drbridge: event {args.event_id} is over", file=sys.stderr)
            return 1
        opt = store.request_opt_out(args.event_id, args.reason, now)
    finally:
        store.close()
    print(f"opted out of {args.event_id} ({opt.opt_id}); a running bridge applies it "
          f"within seconds and tells the VTN")
    return 0


def cmd_unavailable(args: argparse.Namespace) -> int:
    def instant(text: str) -> datetime:
        value = datetime.fromisoformat(text)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    try:
        start, end = instant(args.start), instant(args.until)
    except ValueError as error:
        print(f"drbridge: {error} (write times as ISO 8601, e.g. 2026-07-01T14:00Z)",
              file=sys.stderr)
        return EXIT_INVALID_CONFIG
    if end <= start:
        print("drbridge: --until must be after --from", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    store = _open_store(args)
    if store is None:
        return EXIT_INVALID_CONFIG
    try:
        opt = store.request_unavailability(start, end, args.reason, datetime.now(UTC))
    finally:
        store.close()
    print(f"unavailable from {start.isoformat()} until {end.isoformat()} ({opt.opt_id})")
    return 0


def cmd_cancel_opt(args: argparse.Namespace) -> int:
    store = _open_store(args)
    if store is None:
        return EXIT_INVALID_CONFIG
    try:
        withdrawn = store.request_opt_cancel(args.opt_id, datetime.now(UTC))
    finally:
        store.close()
    if not withdrawn:
        print(f"drbridge: no standing opt {args.opt_id!r}", file=sys.stderr)
        return 1
    print(f"withdrew {args.opt_id}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.sim.demo import run_demo

    return asyncio.run(run_demo(stations=args.stations, workdir=Path(args.workdir),
                                web_port=args.web_port, linger_s=args.linger,
                                protocol=args.protocol))


def cmd_report(args: argparse.Namespace) -> int:
    config = _load(Path(args.config))
    if config is None:
        return EXIT_INVALID_CONFIG
    from bridge.report import write_report

    return write_report(config, args.event_id, Path(args.out) if args.out else None)


def _read_password(args: argparse.Namespace) -> bytes | None:
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("station password: ")
        if getpass.getpass("again: ") != first:
            print("drbridge: the passwords differ", file=sys.stderr)
            return None
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if args.hex:
        try:
            password = bytes.fromhex(first)
        except ValueError:
            print("drbridge: --hex expects hexadecimal digits", file=sys.stderr)
            return None
    else:
        password = first.encode("utf-8")
    if not password:
        print("drbridge: empty password", file=sys.stderr)
        return None
    return password


def cmd_hash_password(args: argparse.Namespace) -> int:
    from bridge.passwords import generate_password, hash_password

    if args.generate:
        text = generate_password()
        password = bytes.fromhex(text) if args.hex else text.encode("ascii")
        print(f"# the password{' (hex)' if args.hex else ''}: {text}")
    else:
        read = _read_password(args)
        if read is None:
            return EXIT_INVALID_CONFIG
        password = read
    print(f"password_hash: {hash_password(password)}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from bridge.simulate import load_scenario, plot, simulate, table, voltage_marks

    if args.fleet is not None and args.fleet < 1:
        print("drbridge: --fleet must be 1 or more", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    config = _load(Path(args.config))
    if config is None:
        return EXIT_INVALID_CONFIG
    try:
        scenario = load_scenario(Path(args.event).read_text("utf-8"), args.event)
    except OSError as error:
        print(f"drbridge: cannot read {args.event}: {error.strerror}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    except InvalidDocument as error:
        print(f"drbridge: invalid event file\n{error}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    rows = simulate(config, scenario, args.fleet)
    print(table(rows))
    png = Path(args.png or Path(args.event).with_suffix(".png").name)
    plot(rows, png, f"{config.policy.name} policy, {Path(args.event).name}",
         **voltage_marks(config))
    print(f"plot written to {png}")
    return 0


def _logging(verbose: bool) -> None:
    import openleadr.client  # noqa: F401 - it sets its logger's level on import; override after
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # openleadr and ocpp log every message at INFO; keep the bridge's own story readable.
    for noisy in ("openleadr", "ocpp", "apscheduler", "websockets"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drbridge", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the bridge for a site until SIGINT/SIGTERM")
    run.add_argument("--config", required=True, help="site configuration (YAML)")
    run.set_defaults(func=cmd_run)
    check = commands.add_parser("check", help="validate a configuration and its policy")
    check.add_argument("--config", required=True, help="site configuration (YAML)")
    check.add_argument("--offline", action="store_true",
                       help="do not contact the VTN (OpenADR 3: the token and programs)")
    check.set_defaults(func=cmd_check)
    opt_out = commands.add_parser(
        "opt-out", help="opt the site out of a DR event (a running bridge picks it up)")
    opt_out.add_argument("event_id", help="the event's id, as received from the VTN")
    opt_out.add_argument("--config", required=True, help="site configuration (YAML)")
    opt_out.add_argument("--reason", default="notParticipating",
                         help="an OpenADR optReason or free text (default notParticipating)")
    opt_out.set_defaults(func=cmd_opt_out)
    unavailable = commands.add_parser(
        "unavailable", help="tell the VTN the site cannot take part in events for a while")
    unavailable.add_argument("--from", dest="start", required=True, help="ISO 8601 start")
    unavailable.add_argument("--until", required=True, help="ISO 8601 end")
    unavailable.add_argument("--config", required=True, help="site configuration (YAML)")
    unavailable.add_argument("--reason", default="notParticipating",
                             help="an OpenADR optReason or free text")
    unavailable.set_defaults(func=cmd_unavailable)
    cancel_opt = commands.add_parser("cancel-opt", help="withdraw an opt-out or unavailability")
    cancel_opt.add_argument("opt_id", help="the id printed by opt-out or unavailable")
    cancel_opt.add_argument("--config", required=True, help="site configuration (YAML)")
    cancel_opt.set_defaults(func=cmd_cancel_opt)
    demo = commands.add_parser(
        "demo", help="a local VTN, simulated chargers and the bridge through one DR event"
    )
    demo.add_argument("--stations", type=int, default=12, help="simulated chargers (default 12)")
    demo.add_argument("--protocol", choices=("2.0b", "3"), default="2.0b",
                      help="the OpenADR version of the local VTN (default 2.0b)")
    demo.add_argument("--workdir", default="var/demo", help="where the demo keeps its database")
    demo.add_argument("--web-port", type=int, default=0,
                      help="port of the demo's dashboard (default: any free port)")
    demo.add_argument("--linger", type=float, default=0, metavar="SECONDS",
                      help="keep everything running this long after the event, to look around")
    demo.set_defaults(func=cmd_demo)
    hashing = commands.add_parser(
        "hash-password",
        help="hash a password for ocpp.stations[].password_hash or web.password_hash",
    )
    hashing.add_argument("--generate", action="store_true",
                         help="make a random password (40 hex digits) and print it too")
    hashing.add_argument("--hex", action="store_true",
                         help="the password is hex digits standing for raw bytes, as an OCPP 1.6"
                         " AuthorizationKey set with ChangeConfiguration")
    hashing.set_defaults(func=cmd_hash_password)
    report = commands.add_parser(
        "report", help="an event's performance: CSV, PNG plot and a text summary"
    )
    report.add_argument("event_id", help="the event, as the VTN named it")
    report.add_argument("--config", required=True, help="site configuration (YAML)")
    report.add_argument("--out", help="folder for the files (default: reports/ by the database)")
    report.set_defaults(func=cmd_report)
    sim = commands.add_parser(
        "simulate", help="the policy over a simulated fleet through described events (no network)"
    )
    sim.add_argument("--config", required=True, help="site configuration (YAML)")
    sim.add_argument("--event", required=True, help="the events and fleet to simulate (YAML)")
    sim.add_argument("--fleet", type=int, default=None, help="simulated stations (default: the"
                     " event file's fleet.stations)")
    sim.add_argument("--png", default=None, help="where to write the plot (default: the event"
                     " file's name with .png, in the current folder)")
    sim.set_defaults(func=cmd_simulate)
    args = parser.parse_args(argv)
    _logging(args.verbose)
    if args.command == "demo" and not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own story
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

"""The ``drbridge`` command: run, check, demo, hash-password."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from bridge.config import Config, load_config
from policies.validation import InvalidDocument

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


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(Path(args.config))
    if config is None:
        return EXIT_INVALID_CONFIG
    model = config.model
    print(f"{config.source}: OK")
    print(f"  VTN        {model.ven.vtn_url} as {model.ven.ven_name}")
    scheme = "wss" if model.ocpp.security.profile in (2, 3) else "ws"
    print(f"  OCPP       {scheme}://{model.ocpp.host}:{model.ocpp.port}/<station id>")
    print(f"  security   {_PROFILES[model.ocpp.security.profile]}")
    print(f"  site       {model.site.capacity_kw:g} kW, {model.site.phases} phases, "
          f"{model.site.voltage_v:g} V")
    print(f"  policy     {config.policy.name}: {config.policy.description}")
    print(f"  storage    {config.storage_path}")
    return 0


async def _run(config: Config) -> None:
    from bridge.app import Bridge

    bridge = Bridge(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, bridge.stop)
    await bridge.run()


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(Path(args.config))
    if config is None:
        return EXIT_INVALID_CONFIG
    asyncio.run(_run(config))
    logging.getLogger("drbridge").info("stopped; state saved in %s", config.storage_path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.sim.demo import run_demo

    return asyncio.run(run_demo(stations=args.stations, workdir=Path(args.workdir)))


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
    from bridge.ocpp.passwords import generate_password, hash_password

    if args.generate:
        text = generate_password()
        password = bytes.fromhex(text) if args.hex else text.encode("ascii")
        print(f"# the station's password{' (hex)' if args.hex else ''}: {text}")
    else:
        read = _read_password(args)
        if read is None:
            return EXIT_INVALID_CONFIG
        password = read
    print(f"password_hash: {hash_password(password)}")
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
    check.set_defaults(func=cmd_check)
    demo = commands.add_parser(
        "demo", help="a local VTN, simulated chargers and the bridge through one DR event"
    )
    demo.add_argument("--stations", type=int, default=12, help="simulated chargers (default 12)")
    demo.add_argument("--workdir", default="var/demo", help="where the demo keeps its database")
    demo.set_defaults(func=cmd_demo)
    hashing = commands.add_parser(
        "hash-password",
        help="hash a station's password for ocpp.stations[].password_hash (read from stdin)",
    )
    hashing.add_argument("--generate", action="store_true",
                         help="make a random password (40 hex digits) and print it too")
    hashing.add_argument("--hex", action="store_true",
                         help="the password is hex digits standing for raw bytes, as an OCPP 1.6"
                         " AuthorizationKey set with ChangeConfiguration")
    hashing.set_defaults(func=cmd_hash_password)
    args = parser.parse_args(argv)
    _logging(args.verbose)
    if args.command == "demo" and not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own story
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

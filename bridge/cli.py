"""The ``drbridge`` command: run, check, demo."""

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
    print(f"  OCPP       ws://{model.ocpp.host}:{model.ocpp.port}/<station id>")
    print(f"  site       {model.site.capacity_kw:g} kW, {model.site.phases} phases, "
          f"{model.site.voltage_v:g} V")
    print(f"  policy     {config.policy.name}: {config.policy.description}")
    policy = config.policy
    print(f"  acts on    {', '.join(sorted(policy.handled_signals)) or 'no signal'}; "
          f"{policy.allocation.strategy} share; {len(config.site.circuits)} circuit(s)")
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


def cmd_simulate(args: argparse.Namespace) -> int:
    from bridge.simulate import load_scenario, plot, simulate, table

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
    plot(rows, png, f"{config.policy.name} policy, {Path(args.event).name}")
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
    check.set_defaults(func=cmd_check)
    demo = commands.add_parser(
        "demo", help="a local VTN, simulated chargers and the bridge through one DR event"
    )
    demo.add_argument("--stations", type=int, default=12, help="simulated chargers (default 12)")
    demo.add_argument("--workdir", default="var/demo", help="where the demo keeps its database")
    demo.set_defaults(func=cmd_demo)
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

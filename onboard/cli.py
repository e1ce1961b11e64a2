"""The `onboard` command line: the one place where errors become messages and exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from onboard import __version__, contract
from onboard.errors import ConfigError, OnboardError
from onboard.emulator.faults import EmulatorSettings


def _knob_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per emulator knob, straight from the settings model, so the two never differ."""
    for name, field in EmulatorSettings.model_fields.items():
        if name == "state":
            continue
        parser.add_argument(f"--{name.replace('_', '-')}", dest=f"knob_{name}", default=None,
                            metavar=name.split("_")[-1].upper(), help=field.description)


def _emulator_settings(args: argparse.Namespace, **extra) -> EmulatorSettings:
    given = {k.removeprefix("knob_"): v for k, v in vars(args).items() if k.startswith("knob_") and v is not None}
    if getattr(args, "state", None):
        given["state"] = args.state
    try:
        return EmulatorSettings(**given, **extra)
    except ValidationError as exc:
        raise ConfigError(_settings_problem(exc, "emulator setting")) from None


def _settings_problem(exc: ValidationError, what: str) -> str:
    lines = [f"invalid {what}:"]
    for error in exc.errors():
        where = "-".join(str(p) for p in error["loc"]).replace("_", "-")
        lines.append(f"  --{where}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)


def cmd_emulator(args: argparse.Namespace) -> int:
    import uvicorn

    from onboard.emulator.app import QuietDrops, create_app
    from onboard.emulator.store import wipe

    knobs = _emulator_settings(args)
    if args.reset:
        print(f"{'wiped' if wipe(knobs.state) else 'nothing to wipe at'} {knobs.state}")
        return 0
    app = create_app(knobs)
    logging.getLogger("uvicorn.error").addFilter(QuietDrops())
    base = f"http://{args.host}:{args.port}"

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:
                print(f"Energy Coordination API emulator at {base}{contract.base_path()}\n"
                      f"  token endpoint: {base}/connect/token\n"
                      f"  state: {knobs.state}\n"
                      f"  try: onboard run SHEET --base-url {base}{contract.base_path()} "
                      f"--token-url {base}/connect/token\n"
                      "Ctrl-C to stop.", flush=True)

    try:
        Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="off")).run()
    except KeyboardInterrupt:
        pass
    print("emulator stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onboard",
        description="Register a customer sheet's users, locations and resources in the Energy Coordination API.",
    )
    parser.add_argument("--version", action="version", version=f"onboard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    emulator = commands.add_parser("emulator", help="serve the local emulator of the API over HTTP",
                                   description="Serve the local emulator of the Energy Coordination API.")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--state", metavar="FILE", help="SQLite file with the emulator's state")
    emulator.add_argument("--reset", action="store_true", help="wipe the state file and exit")
    _knob_flags(emulator)
    emulator.set_defaults(handler=cmd_emulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except OnboardError as exc:
        print(f"onboard: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("onboard: interrupted", file=sys.stderr)
        return 130

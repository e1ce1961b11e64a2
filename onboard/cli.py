"""The `onboard` command line: the one place where errors become messages and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import yaml

from onboard import __version__, api, contract, records, report, template
from onboard import plan as planning
from onboard import sheet as sheets
from onboard.emulator.faults import EmulatorSettings
from onboard.errors import ConfigError, Interrupted, OnboardError, UsageError, printable
from onboard.journal import Journal, journal_path
from onboard.journal import progress as progress_of
from onboard.pipeline import BatchSize, Ledger, Run, stop_everything
from onboard.settings import ENVIRONMENTS, Target, Tuning, load, target

SHOWN_PROBLEMS = 10


def _knob_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per emulator knob, straight from the settings model, so the two never differ."""
    for name, field in EmulatorSettings.model_fields.items():
        if name == "state":
            continue
        parser.add_argument(f"--{name.replace('_', '-')}", dest=f"knob_{name}", default=None,
                            metavar=name.split("_")[-1].upper(), help=field.description)


def _emulator_settings(args: argparse.Namespace) -> EmulatorSettings:
    given = {k.removeprefix("knob_"): v for k, v in vars(args).items() if k.startswith("knob_") and v is not None}
    if getattr(args, "state", None):
        given["state"] = args.state
    return load(EmulatorSettings, "emulator settings", flags=True, **given)


def cmd_emulator(args: argparse.Namespace) -> int:
    import uvicorn

    from onboard.emulator.app import QuietDrops, create_app
    from onboard.emulator.store import wipe

    knobs = _emulator_settings(args)
    if args.reset:
        print(f"{'wiped' if wipe(knobs.state) else 'nothing to wipe at'} {knobs.state}")
        return 0
    with socket.socket() as probe:
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise ConfigError(f"cannot serve on {args.host}:{args.port} ({exc.strerror}): choose another --port"
                              ) from None
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

    with contextlib.suppress(KeyboardInterrupt):
        Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="off")).run()
    answered = sum(app.stats.values())
    faults = ", ".join(f"{n} {kind}" for kind, n in app.faults.counts.items())
    print(f"emulator stopped: answered {answered} API requests; faults injected: {faults}")
    return 0


# reading and planning, shared by validate and run


def _mapping(args: argparse.Namespace) -> dict[str, str]:
    """--mapping FILE (TOML or YAML) then every --map "Header=field", each header to a known field."""
    mapping: dict[str, str] = {}
    if args.mapping:
        path = Path(args.mapping)
        try:
            text = path.read_text(encoding="utf-8-sig")
            loaded = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
        except OSError as exc:
            raise ConfigError(f"--mapping {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"--mapping {path} is not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: "
                              f"{exc}") from None
        if isinstance(loaded, dict) and isinstance(loaded.get("columns"), dict):
            loaded = loaded["columns"]
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise ConfigError(f"--mapping {path} must map each source header to a field name, "
                              'e.g. "Kundenummer" = "customer_id"')
        mapping.update({str(k): v for k, v in loaded.items()})
    for item in args.map or []:
        header, equals, field_name = item.rpartition("=")
        if not equals or not header.strip():
            raise UsageError(f'--map {item!r}: write it as "Source Header=field"')
        mapping[header.strip()] = field_name.strip()
    for header, field_name in mapping.items():
        if field_name not in sheets.FIELDS:
            raise ConfigError(f"mapping {header!r} to {field_name!r}: there is no such field; "
                              f"the fields are {', '.join(sheets.FIELDS)}")
    return mapping


def _read(args: argparse.Namespace) -> tuple[sheets.Sheet, planning.Plan]:
    sheet = sheets.read(Path(args.input), args.sheet, _mapping(args))
    sheets.check_columns(sheet)
    for note in sheet.notes:
        print(f"onboard: {note}", file=sys.stderr)
    return sheet, planning.build(records.check(sheet, args.strict_meter_ids))


def _show_problems(results: list[report.RowResult]) -> None:
    refused = [r for r in results if r.status in ("invalid", "failed")]
    for result in refused[:SHOWN_PROBLEMS]:
        print(f"  row {result.number} ({result.status}): {result.error}", file=sys.stderr)
    if len(refused) > SHOWN_PROBLEMS:
        print(f"  ... and {len(refused) - SHOWN_PROBLEMS} more rows in the errors file", file=sys.stderr)


def _finish(outputs: report.Outputs, sheet: sheets.Sheet, results: list[report.RowResult],
            summary: dict) -> int:
    report.write(outputs, sheet, results, summary)
    _show_problems(results)
    counts = ", ".join(f"{n} {status}" for status, n in summary["status"].items())
    print(f"{summary['rows']} rows: {counts}")
    if "requests" in summary:
        entities = "; ".join(f"{kind} " + ", ".join(f"{n} {state}" for state, n in c.items())
                             for kind, c in summary["entities"].items())
        print(f"{entities}; {summary['requests']} requests in {summary['seconds']} s")
    refused = sum(1 for r in results if not r.landed)
    print(f"  results: {outputs.results}")
    print(f"  errors:  {outputs.errors}" + (f"  ({refused} rows to fix and run again)" if refused else ""))
    print(f"  summary: {outputs.summary}")
    return 1 if refused else 0


def _validated(outputs: report.Outputs, sheet: sheets.Sheet, plan: planning.Plan) -> int:
    """Outputs with statuses valid/invalid: nothing was sent."""
    results = report.row_results(sheet, plan, None)
    return _finish(outputs, sheet, results, report.summarise(sheet, plan, results, None))


def cmd_validate(args: argparse.Namespace) -> int:
    sheet, plan = _read(args)
    return _validated(report.Outputs.beside(sheet.path, Path(args.out) if args.out else None), sheet, plan)


def _describe_plan(plan: planning.Plan, batch_size: int) -> str:
    vehicles = sum(1 for r in plan.resources.values() if r.is_vehicle)
    requests = plan.requests(batch_size)
    invalid = sum(1 for r in plan.rows if not r.valid)
    return (f"plan: {len(plan.users)} users, {len(plan.locations)} locations, {len(plan.resources)} resources "
            f"({vehicles} vehicles) from {len(plan.rows)} rows ({invalid} invalid)\n"
            f"requests when nothing exists yet: {requests['users']} user batches + {requests['locations']} "
            f"location batches (at --batch-size {batch_size}) + {requests['resources']} resource calls, "
            "plus the reads that find what exists")


def _confirm_production(args: argparse.Namespace, where: Target, plan: planning.Plan) -> None:
    if where.env != "production" or args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("--env production registers real customers: add --yes to confirm when not "
                         "running interactively")
    answer = input(f"Register {len(plan.users)} users, {len(plan.locations)} locations and "
                   f"{len(plan.resources)} resources in PRODUCTION ({where.shown_base_url})? Type yes: ")
    if answer.strip().lower() != "yes":
        raise UsageError("not confirmed; nothing was sent")


async def _execute(run_with: dict, where: Target, plan: planning.Plan, ledger: Ledger,
                   args: argparse.Namespace) -> None:
    """Sign in, then run the stages; SIGTERM stops it like Ctrl-C does."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    try:
        async with api.connect(where, args.concurrency, run_with["tuning"], emulator_knobs=run_with["knobs"],
                               stats=run_with["stats"]) as client:
            await client.sign_in()
            await Run(client, plan, ledger, run_with["batch"], args.concurrency, show_progress=args.progress)()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def cmd_run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    sheet, plan = _read(args)
    outputs = report.Outputs.beside(sheet.path, Path(args.out) if args.out else None)
    if args.dry_run:
        print(_describe_plan(plan, args.batch_size))
        return _validated(outputs, sheet, plan)
    where = target(args.env, args.base_url, args.token_url)
    run_with = {"tuning": load(Tuning, "ONBOARD_* settings"), "stats": api.Stats(),
                "batch": BatchSize(args.batch_size), "knobs": None}
    if where.local:
        state = {"state": Path(args.state)} if args.state else {}
        run_with["knobs"] = load(EmulatorSettings, "ONBOARD_EMULATOR_* settings", **state)
        print(f"onboard: --env local: the emulator runs in-process, state in {run_with['knobs'].state}",
              file=sys.stderr)
    _confirm_production(args, where, plan)
    planned = {"users": len(plan.users), "locations": len(plan.locations), "resources": len(plan.resources)}
    api_key = where.shown_base_url
    if where.local:
        api_key += f" (state {run_with['knobs'].state.resolve()})"
    journal = Journal.open(journal_path(outputs.results.parent, sheet.path), sheet.path, api_key, planned)
    stats = run_with["stats"]
    try:
        ledger = Ledger(journal, journal.outcomes() if journal.resumed else ())
        if journal.resumed:
            print(f"onboard: resuming the unfinished run of {sheet.path.name} ({len(ledger.outcomes)} entities "
                  f"already settled; journal {journal.path})", file=sys.stderr)
        stopped: OnboardError | None = None
        try:
            asyncio.run(_execute(run_with, where, plan, ledger, args))
        except OnboardError as exc:
            if not stats.token_fetches:
                journal.discard()
                raise
            stopped = exc
        except (KeyboardInterrupt, asyncio.CancelledError):
            stopped = Interrupted("interrupted: what is done is kept; run the same command again to resume")
        else:
            journal.finish()
        if stopped is not None:
            stop_everything(plan, ledger, f"not sent: {stopped}")
        results = report.row_results(sheet, plan, ledger)
        summary = report.summarise(
            sheet, plan, results, ledger, environment=where.env, base_url=where.shown_base_url,
            resumed=journal.resumed, **stats.as_dict(), batch_size=run_with["batch"].value,
            seconds=round(time.monotonic() - started, 2),
            journal="closed" if stopped is None else str(journal.path),
        )
        code = _finish(outputs, sheet, results, summary)
    finally:
        journal.release()
    if stopped is not None:
        print(f"onboard: {printable(str(stopped), keep_lines=True)}", file=sys.stderr)
        return max(code, stopped.exit_code)
    return code


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def cmd_status(args: argparse.Namespace) -> int:
    folder = Path(args.out) if args.out else None
    if args.input:
        source = Path(args.input)
        journals = [journal_path(folder or source.parent, source)]
    else:
        journals = sorted((folder or Path.cwd()).glob("*.journal.sqlite"))
    journals = [j for j in journals if j.exists()]
    if not journals:
        print("no onboard run found here" + (f" for {args.input}" if args.input else "")
              + ": a run keeps its journal (<input>.journal.sqlite) beside its outputs")
        return 0
    for path in journals:
        for run in progress_of(path)[:1 if args.input else 3]:
            state = (f"running (pid {run.running_pid})" if run.running_pid else
                     {"open": "interrupted", "closed": "finished", "abandoned": "abandoned"}[run.state])
            print(f"{Path(run.input).name} -> {run.base_url}")
            print(f"  {state}; started {_when(run.started)}, last activity {_when(run.updated or run.finished)}")
            if run.state in ("open",):
                for kind, total in run.planned.items():
                    counts = run.done.get(kind[:-1], {})
                    settled = {k: v for k, v in counts.items() if k != "sent"}
                    detail = ", ".join(f"{n} {k}" for k, n in sorted(settled.items()))
                    sent = f"; {counts['sent']} sent, awaiting confirmation" if counts.get("sent") else ""
                    print(f"  {kind:<10} {sum(settled.values()):>7} of {total} settled"
                          + (f" ({detail})" if detail else "") + sent)
                if not run.running_pid:
                    print(f"  run the same `onboard run {Path(run.input).name} ...` command again to resume")
            print(f"  journal: {path}")
    return 0


def cmd_template(args: argparse.Namespace) -> int:
    path = Path(args.output)
    template.write_template(path)
    print(f"wrote {path}")
    return 0


def _input_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="the customer sheet (.xlsx or .csv)")
    parser.add_argument("--out", metavar="DIR", help="folder for the outputs (default: the input's folder)")
    parser.add_argument("--sheet", metavar="NAME", help="the workbook's sheet to read (default: the first)")
    parser.add_argument("--map", action="append", metavar='"HEADER=field"',
                        help="read a column with another header as one of the fields (repeatable)")
    parser.add_argument("--mapping", metavar="FILE", help="a TOML or YAML file of header = field lines")
    parser.add_argument("--strict-meter-ids", action="store_true",
                        help="refuse meter point ids whose GS1 check digit fails (default: warn)")


def _api_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", choices=ENVIRONMENTS, default="sandbox",
                        help="which API: the vendor's sandbox (default), production, or the local emulator")
    parser.add_argument("--base-url", metavar="URL", help="the API's base URL, overriding --env")
    parser.add_argument("--token-url", metavar="URL", help="the OAuth2 token endpoint")
    parser.add_argument("--state", metavar="FILE", help="--env local: the emulator's SQLite state file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onboard",
        description="Register a customer sheet's users, locations and resources in the Energy Coordination API.",
    )
    parser.add_argument("--version", action="version", version=f"onboard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="register the sheet's customers, sites and devices",
                              description="Register the sheet's users, locations and resources.")
    _input_flags(run)
    _api_flags(run)
    run.add_argument("--batch-size", type=_positive, default=100, metavar="N",
                     help="users or locations per batch request (default 100; halved on 413)")
    run.add_argument("--concurrency", type=_positive, default=16, metavar="N",
                     help="most requests in flight (default 16; lowered on 429)")
    run.add_argument("--dry-run", action="store_true", help="validate and print the plan; send nothing")
    run.add_argument("--yes", action="store_true", help="do not ask before writing to production")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bars on stderr (default: when stderr is a terminal)")
    run.set_defaults(handler=cmd_run)

    validate = commands.add_parser("validate", help="check the sheet without calling the API",
                                   description="Check every row; write the outputs with statuses valid/invalid. "
                                   "Nothing is sent: the API options are accepted so a validate command line "
                                   "can become a run one.")
    _input_flags(validate)
    _api_flags(validate)
    validate.set_defaults(handler=cmd_validate)

    template = commands.add_parser("template", help="write an empty customer sheet to fill in",
                                   description="Write the customer sheet template (.xlsx or .csv).")
    template.add_argument("output", metavar="OUT", help="OUT.xlsx or OUT.csv")
    template.set_defaults(handler=cmd_template)

    status = commands.add_parser("status", help="how far a running or interrupted import has come",
                                 description="Show the progress kept in a run's journal.")
    status.add_argument("input", metavar="INPUT", nargs="?", help="the sheet being imported (default: every "
                        "journal in the current folder)")
    status.add_argument("--out", metavar="DIR", help="the folder holding the outputs and the journal")
    status.set_defaults(handler=cmd_status)

    emulator = commands.add_parser("emulator", help="serve the local emulator of the API over HTTP",
                                   description="Serve the local emulator of the Energy Coordination API.")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--state", metavar="FILE", help="SQLite file with the emulator's state")
    emulator.add_argument("--reset", action="store_true", help="wipe the state file and exit")
    _knob_flags(emulator)
    emulator.set_defaults(handler=cmd_emulator)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except OnboardError as exc:
        print(f"onboard: {printable(str(exc), keep_lines=True)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("onboard: interrupted", file=sys.stderr)
        return 130

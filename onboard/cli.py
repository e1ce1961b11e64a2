"""The `onboard` command line: the one place where errors become messages and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from onboard import __version__
from onboard.errors import ConfigError, OnboardError, UsageError, printable
from onboard.settings import ENVIRONMENTS

# Each command imports what it needs where it needs it, so `--help`, `template` or `status` do not
# pay for the HTTP client, the emulator or the workbook writers.
if TYPE_CHECKING:
    from onboard.emulator.faults import EmulatorSettings
    from onboard.followup import FollowUp
    from onboard.journal import Progress
    from onboard.onboarding import Intake, Result
    from onboard.plan import Plan
    from onboard.settings import Target
    from onboard.sheet import Sheet

SHOWN_PROBLEMS = 10
T = TypeVar("T")


def _knob_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per emulator knob, straight from the settings model, so the two never differ.

    argparse %-formats help text, so a description's own `%` (as in "±50%") is doubled."""
    from onboard.emulator.faults import EmulatorSettings

    for name, field in EmulatorSettings.model_fields.items():
        if name == "state":
            continue
        parser.add_argument(f"--{name.replace('_', '-')}", dest=f"knob_{name}", default=None,
                            metavar=name.split("_")[-1].upper(), help=(field.description or "").replace("%", "%%"))


def _emulator_settings(args: argparse.Namespace) -> EmulatorSettings:
    from onboard.emulator.faults import EmulatorSettings
    from onboard.settings import load

    given = {k.removeprefix("knob_"): v for k, v in vars(args).items() if k.startswith("knob_") and v is not None}
    if getattr(args, "state", None):
        given["state"] = args.state
    return load(EmulatorSettings, "emulator settings", flags=True, **given)


def cmd_emulator(args: argparse.Namespace) -> int:
    import logging
    import socket

    import uvicorn

    from onboard import contract
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
    held = app.faults.held.mean_ms()
    latency = f"; answers held {held:.2f} ms on average (--latency-ms {knobs.latency_ms:g})" if held else ""
    print(f"emulator stopped: answered {answered} API requests{latency}; faults injected: {faults}")
    return 0


# validate and run: the work is `onboard.onboarding`'s; here it is only rendered


def _read(args: argparse.Namespace) -> Intake:
    from onboard import onboarding

    mapping = onboarding.mapping_of(args.mapping, args.map or [], args.map_value or [])
    return onboarding.read(Path(args.input), mapping=mapping, sheet=args.sheet, where=args.where or [],
                           strict_meter_ids=args.strict_meter_ids, columns_read=_show_columns)


def _show_columns(sheet: Sheet) -> None:
    from onboard import sheet as sheets

    where = f", sheet {sheet.sheet_name!r}" if sheet.sheet_name else ""
    print(f"{sheet.path.name}{where}: header in row {sheet.header_row}; columns:")
    uses = sheets.column_uses(sheet.columns)
    width = min(32, max((len(header) for header, _ in uses), default=0))
    fields = {c.name for c in sheet.columns if c.field}
    for header, use in uses:
        print(printable(f"  {header:<{width}} {'-> ' if header in fields else ''}{use}"))


def _say(text: str) -> None:
    print(printable(f"onboard: {text}", keep_lines=True), file=sys.stderr)


def _show(result: Result) -> int:
    """Say what happened; the exit code says whether anything is left to fix."""
    outputs, summary, results = result.outputs, result.summary, result.rows
    for notice in (*result.intake.notices, *result.notices):
        _say(notice)
    refused = [r for r in results if r.to_fix]
    for row in refused[:SHOWN_PROBLEMS]:
        print(printable(f"  {row.named} ({row.status}): {row.error}"), file=sys.stderr)
    if len(refused) > SHOWN_PROBLEMS:
        where = "the errors file" if outputs.errors is not None else "the validation file"
        print(f"  ... and {_rows(len(refused) - SHOWN_PROBLEMS)} more in {where}", file=sys.stderr)
    counts = ", ".join(f"{n} {status}" for status, n in summary["status"].items())
    print(f"{summary['rows']} rows: {counts}")
    if "requests" in summary:
        entities = "; ".join(f"{kind} " + ", ".join(f"{n} {state}" for state, n in c.items())
                             for kind, c in summary["entities"].items())
        print(f"{entities}; {summary['requests']} requests in {summary['seconds']} s")
    unsent = sum(1 for r in results if r.status == "not sent")
    print(f"  {'validation' if outputs.errors is None else 'results'}: {outputs.results}")
    if outputs.errors is not None:
        print(f"  errors:  {outputs.errors}  ({_rows(len(refused))} to fix and run again)" if result.errors_written
              else "  errors:  none: no row to fix")
    print(f"  summary: {outputs.summary}")
    if unsent:
        print(f"  {_rows(unsent)} not sent: run the same command again to resume")
    if result.folded is not None:
        into, folded = result.folded
        print(f"  {_rows(folded.updated)} brought up to date in {into}"
              + (f"; {_rows(folded.added)} with no original row of their own (added by hand) are in "
                 f"{outputs.results.name} only" if folded.added else ""))
    code = 1 if refused or unsent else 0
    if result.stopped is not None:
        _say(str(result.stopped))
        code = max(code, result.stopped.exit_code)
    return code


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _out(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else Path(args.input).parent


def cmd_validate(args: argparse.Namespace) -> int:
    from onboard import onboarding

    return _show(onboarding.validated(_read(args), _out(args)))


def _describe_plan(plan: Plan, batch_size: int) -> str:
    vehicles = sum(1 for r in plan.resources.values() if r.is_vehicle)
    requests = plan.requests(batch_size)
    invalid = sum(1 for r in plan.rows if not r.valid)
    return (f"plan: {len(plan.users)} users, {len(plan.locations)} locations, {len(plan.resources)} resources "
            f"({vehicles} vehicles) from {len(plan.rows)} rows ({invalid} invalid)\n"
            f"requests when nothing exists yet: {requests['users']} user batches + {requests['locations']} "
            f"location batches (at --batch-size {batch_size}) + {requests['resources']} resource calls, "
            "plus the reads that find what exists")


def _confirm_production(args: argparse.Namespace, where: Target, plan: Plan) -> None:
    if where.env != "production" or args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("--env production registers real customers: add --yes to confirm when not "
                         "running interactively")
    also = ", and change the registered sites whose fields differ from the sheet (--update)" if args.update else ""
    answer = input(f"Register {len(plan.users)} users, {len(plan.locations)} locations and "
                   f"{len(plan.resources)} resources in PRODUCTION ({where.shown_base_url}){also}? Type yes: ")
    if answer.strip().lower() != "yes":
        raise UsageError("not confirmed; nothing was sent")


async def _send(intake: Intake, where: Target, args: argparse.Namespace) -> Result:
    """The run, with SIGTERM stopping it as Ctrl-C does."""
    import asyncio
    import signal

    from onboard import onboarding

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    try:
        return await onboarding.send(intake, where, out=_out(args), batch_size=args.batch_size,
                                     concurrency=args.concurrency, progress=args.progress, state=args.state,
                                     custom_url=args.base_url is not None, enroll=args.enroll,
                                     update=args.update, say=_say)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from onboard import onboarding

    where = None if args.dry_run else onboarding.target(args.env, args.base_url, args.token_url)
    if args.test_area and where is not None:
        onboarding.refuse_production(where, "--test-area")
    intake = _read(args)
    if args.test_area:
        onboarding.place_in_test_area(intake, args.test_area)
    if args.dry_run:
        print(_describe_plan(intake.plan, args.batch_size))
        return _show(onboarding.validated(intake, _out(args)))
    _confirm_production(args, where, intake.plan)
    return _show(asyncio.run(_send(intake, where, args)))


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def cmd_status(args: argparse.Namespace) -> int:
    from onboard.journal import journal_path
    from onboard.journal import progress as progress_of

    folder = Path(args.out) if args.out else None
    source = Path(args.input) if args.input else None
    if source:
        journals = [journal_path(folder or source.parent, source)]
    else:
        journals = sorted((folder or Path.cwd()).glob("*.journal.sqlite"))
    journals = [j for j in journals if os.path.lexists(j)]
    if not journals:
        print("no onboard run found here" + (f" for {args.input}" if args.input else "")
              + ": a run keeps its journal (<input>.journal.sqlite) beside its outputs")
        return 0
    code = 0
    for path in journals:
        try:
            runs = progress_of(path)
        except OnboardError as exc:
            print(f"onboard: {printable(str(exc), keep_lines=True)}", file=sys.stderr)
            code = exc.exit_code
            continue
        if not runs:
            print(f"no run recorded yet in {path}")
        for run in runs[:1 if source else 3]:
            _show_run(run, path, source)
    return code


def _command_of(journal: Path) -> str:
    """The command a journal is of: `run`'s is `<stem>.journal.sqlite`, a later command's
    `<stem>.<command>.journal.sqlite`."""
    from onboard.report import JOURNALLED

    command = journal.name.removesuffix(".journal.sqlite").rpartition(".")[2]
    return command if command in JOURNALLED else "run"


def _show_run(run: Progress, path: Path, source: Path | None) -> None:
    state = (f"running (pid {run.running_pid})" if run.running_pid else
             {"open": "interrupted", "closed": "finished", "abandoned": "abandoned"}.get(run.state, run.state))
    print(f"{Path(run.input).name} -> {run.base_url}")
    if source and Path(run.input).resolve() != source.resolve():
        print(f"  (a run of {run.input}, another input whose outputs have the same names)")
    print(f"  {state}; started {_when(run.started)}, last activity {_when(run.updated or run.finished)}")
    if run.state == "open":
        for kind, total in run.planned.items():
            counts = run.done.get(kind[:-1], {})
            settled = {k: v for k, v in counts.items() if k != "sent"}
            detail = ", ".join(f"{n} {k}" for k, n in sorted(settled.items()))
            sent = f"; {counts['sent']} sent, awaiting confirmation" if counts.get("sent") else ""
            print(f"  {kind:<10} {sum(settled.values()):>7} of {total} settled"
                  + (f" ({detail})" if detail else "") + sent)
        if not run.running_pid:
            print(f"  run the same `onboard {_command_of(path)} {Path(run.input).name} ...` command again to resume")
    print(f"  journal: {path}")


# the commands that follow a run: the work is in their own modules; here it is only rendered


async def _stoppable(work: Awaitable[T]) -> T:
    """`work`, with SIGTERM stopping it as Ctrl-C does."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _show_follow_up(result: FollowUp) -> int:
    """Say what a command after a run did; exit 1 when something did not go as asked."""
    where = f"{result.outputs.results}" if result.outputs is not None else "the output"
    for notices, stream in ((result.notices, sys.stdout), (result.problems, sys.stderr)):
        for line in notices[:SHOWN_PROBLEMS]:
            print(printable(f"  {line}"), file=stream)
        if len(notices) > SHOWN_PROBLEMS:
            print(f"  ... and {len(notices) - SHOWN_PROBLEMS} more in {where}", file=stream)
    summary = result.summary
    print(f"{_rows(summary['rows'])}" + (f" ({summary['to']})" if summary.get("to") else "")
          + (", dry run: nothing deleted" if summary.get("dry_run") else ""))
    for kind, counts in summary["counts"].items():
        print(f"  {kind + ':':<15}" + ", ".join(f"{n} {state}" for state, n in counts.items()))
    if "requests" in summary:
        print(f"{summary['requests']} requests in {summary['seconds']} s")
    if result.outputs is not None:
        width = max(len(result.command) + 1, len("summary:")) + 1
        print(f"  {result.command + ':':<{width}}{result.outputs.results}")
        print(f"  {'summary:':<{width}}{result.outputs.summary}")
    code = 1 if result.problems else 0
    if result.stopped is not None:
        _say(str(result.stopped))
        code = max(code, result.stopped.exit_code)
    return code


def cmd_eligibility(args: argparse.Namespace) -> int:
    import asyncio

    from onboard import onboarding
    from onboard.eligibility import eligibility

    mapping = onboarding.mapping_of(args.mapping, args.map or [], args.map_value or [])
    intake = onboarding.read(Path(args.input), mapping=mapping, sheet=args.sheet, where=args.where or [],
                             strict_meter_ids=args.strict_meter_ids)
    where = onboarding.target(args.env, args.base_url, args.token_url)
    for notice in intake.notices:
        _say(notice)
    return _show_follow_up(asyncio.run(_stoppable(eligibility(
        intake, where, out=_out(args), concurrency=args.concurrency, progress=args.progress, state=args.state,
        custom_url=args.base_url is not None, say=_say))))


def cmd_plan(args: argparse.Namespace) -> int:
    import asyncio

    from onboard import onboarding
    from onboard.preview import preview

    where = onboarding.target(args.env, args.base_url, args.token_url)
    intake = _read(args)
    for notice in intake.notices:
        _say(notice)
    return _show_follow_up(asyncio.run(_stoppable(preview(
        intake, where, out=_out(args), concurrency=args.concurrency, progress=args.progress, state=args.state,
        custom_url=args.base_url is not None, say=_say))))


def _read_results(args: argparse.Namespace) -> Intake:
    """A results file, read and planned as `run` reads it (with the mapping its run had), no print-out."""
    from onboard import onboarding

    mapping = onboarding.mapping_of(args.mapping, args.map or [], args.map_value or [])
    return onboarding.read(Path(args.input), mapping=mapping, sheet=args.sheet)


def cmd_move(args: argparse.Namespace) -> int:
    import asyncio

    from onboard import onboarding
    from onboard.move import move, refuse_production

    refuse_production(args.env, args.base_url)
    where = onboarding.target(args.env, args.base_url, args.token_url)
    intake = _read_results(args)
    return _show_follow_up(asyncio.run(_stoppable(move(
        intake, where, area=args.test_area, restore=args.restore, out=_out(args), concurrency=args.concurrency,
        progress=args.progress, state=args.state, custom_url=args.base_url is not None, say=_say))))


def cmd_cleanup(args: argparse.Namespace) -> int:
    import asyncio

    from onboard import onboarding
    from onboard import sheet as sheets
    from onboard.cleanup import cleanup, refuse_production

    refuse_production(args.env, args.base_url, args.yes, args.dry_run)
    where = onboarding.target(args.env, args.base_url, args.token_url)
    results = sheets.read(Path(args.input), args.sheet)
    return _show_follow_up(asyncio.run(_stoppable(cleanup(
        results, where, out=_out(args), dry_run=args.dry_run, keep_users=args.keep_users, yes=args.yes,
        concurrency=args.concurrency, progress=args.progress, state=args.state, custom_url=args.base_url is not None,
        say=_say))))


def cmd_template(args: argparse.Namespace) -> int:
    from onboard import template

    path = Path(args.output)
    template.write_template(path, force=args.force)
    print(f"wrote {path}")
    return 0


def _input_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="the customer sheet (.xlsx or .csv)")
    parser.add_argument("--out", metavar="DIR", help="folder for the outputs (default: the input's folder)")
    parser.add_argument("--sheet", metavar="NAME", help="the workbook's sheet to read (default: the first)")
    parser.add_argument("--map", action="append", metavar='"HEADER=field"',
                        help='read a column as one of the fields; "HEADER=" ignores the column (repeatable)')
    parser.add_argument("--map-value", action="append", metavar='"field:WORD=value"',
                        help='read a value in your words as one of the field\'s values, e.g. '
                        '"resource_type:Varmepumpe=HVAC" (repeatable)')
    parser.add_argument("--mapping", metavar="FILE",
                        help="a TOML or YAML file with [columns], ignore = [...] and [values.<field>] tables")
    parser.add_argument("--where", action="append", metavar='"COLUMN=value"',
                        help='read only the rows where a column has (=) or has not (!=) a value, ignoring case; '
                        "rows left out are `skipped` (repeatable: every condition must hold)")
    parser.add_argument("--strict-meter-ids", action="store_true",
                        help="refuse meter point ids whose GS1 check digit fails (default: warn)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr (default: when stderr is a terminal)")


def _results_flags(parser: argparse.ArgumentParser, mapped: bool = True) -> None:
    """RESULTS and where the outputs go; `mapped`: the sheet's own fields are read too (the
    coordinates), so the run's mapping applies."""
    parser.add_argument("input", metavar="RESULTS", help="the results file a run wrote (<stem>.results.xlsx or .csv)")
    parser.add_argument("--out", metavar="DIR", help="folder for the outputs (default: the results file's folder)")
    parser.add_argument("--sheet", metavar="NAME", help="the workbook's sheet to read (default: the first)")
    if mapped:
        parser.add_argument("--map", action="append", metavar='"HEADER=field"',
                            help="as for the run that wrote the results file (repeatable)")
        parser.add_argument("--map-value", action="append", metavar='"field:WORD=value"',
                            help="as for the run that wrote the results file (repeatable)")
        parser.add_argument("--mapping", metavar="FILE", help="as for the run that wrote the results file")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr (default: when stderr is a terminal)")


def _api_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", choices=ENVIRONMENTS, default="sandbox",
                        help="which API: the vendor's sandbox (default), production, or the local emulator")
    parser.add_argument("--base-url", metavar="URL", help="the API's base URL, overriding --env")
    parser.add_argument("--token-url", metavar="URL", help="the OAuth2 token endpoint")
    parser.add_argument("--state", metavar="FILE", help="--env local: the emulator's SQLite state file")


def _concurrency_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=_positive, default=16, metavar="N",
                        help="most requests in flight (default 16; lowered on 429)")


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
    _concurrency_flag(run)
    run.add_argument("--dry-run", action="store_true", help="validate and print the plan; send nothing")
    run.add_argument("--enroll", action="store_true",
                     help="then enroll every registered user in the program (a user must be eligible; in the "
                     "sandbox, a location inside a test area); an enrolled user is `exists`")
    run.add_argument("--test-area", type=int, choices=(1, 2), metavar="1|2",
                     help="sandbox: register every location at its own point inside the guide's test area 1 "
                     "(Svalbard) or 2 (Longyearbyen), so its user becomes eligible; refused for production")
    run.add_argument("--update", action="store_true",
                     help="also change sites the API holds with another location type, other meter point ids or "
                     "other coordinates than the sheet's (PATCH, only those fields): status updated; without it "
                     "such rows are `differs`, exit 1, and nothing is changed")
    run.add_argument("--yes", action="store_true", help="do not ask before writing to production")
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
    template.add_argument("--force", action="store_true", help="replace OUT if it exists")
    template.set_defaults(handler=cmd_template)

    plan = commands.add_parser(
        "plan", help="compare the sheet with what the API holds: what a run would create, update or refuse",
        description="Read what the API holds for the sheet's users (as run's discovery does) and send no writes; "
        "write <stem>.plan.<ext>: every row with a plan column (create, unchanged, update: <fields>, conflict: "
        "<why>, invalid: <why>) and plan_detail (what differs, what conflicts).")
    _input_flags(plan)
    _api_flags(plan)
    _concurrency_flag(plan)
    plan.set_defaults(handler=cmd_plan)

    eligibility = commands.add_parser(
        "eligibility", help="ask which meter points and users are eligible for the SPARK program, and who is enrolled",
        description="Ask the API, once per distinct value and concurrently, whether each meter point id is eligible "
        "(GET /meters/{mpid}/eligible) and each user eligible and enrolled (GET /users/{userId}/eligibility, "
        "/enrollment); write <stem>.eligibility.<ext>: every row with eligible (yes, no, or mixed for a cell of "
        "several ids), user_eligible and enrolled. Sends no writes.")
    _input_flags(eligibility)
    _api_flags(eligibility)
    _concurrency_flag(eligibility)
    eligibility.set_defaults(handler=cmd_eligibility)

    move = commands.add_parser(
        "move", help="move the locations of a results file into a sandbox test area, or back",
        description="Move every location of an earlier results file into one of the sandbox's test areas "
        "(PATCH /users/{userId}/locations/{locationId}, only coordinates in the body; each location at its own point, "
        "the same on every run), or back to the coordinates in the sheet (--restore). Writes <stem>.move.<ext>: per "
        "row, where the location was and where it is now. Refused for production.")
    _results_flags(move)
    where_to = move.add_mutually_exclusive_group(required=True)
    where_to.add_argument("--test-area", type=_positive, metavar="N", help="the guide's test area: 1 or 2")
    where_to.add_argument("--restore", action="store_true",
                          help="back to the sheet's coordinates; a site the sheet gave none has them removed")
    _api_flags(move)
    _concurrency_flag(move)
    move.set_defaults(handler=cmd_move)

    cleanup = commands.add_parser(
        "cleanup", help="delete what a results file says this tool created (a rehearsal's users, sites, devices)",
        description="Delete what an earlier results file says this tool created: resources, then locations, then "
        "users; never what a row says existed before (status exists), nor a location or user still holding anything "
        "else. Writes <stem>.cleanup.<ext>: per row, what was deleted. Resumable; an entity already gone is `gone`. "
        "Sandbox and local by default; production only with --env production --yes.")
    _results_flags(cleanup, mapped=False)
    cleanup.add_argument("--dry-run", action="store_true",
                         help="delete nothing; say what would go, in <stem>.cleanup-dry-run.<ext>")
    cleanup.add_argument("--keep-users", action="store_true", help="delete resources and locations, keep users")
    cleanup.add_argument("--yes", action="store_true", help="with --env production: confirm deleting there")
    _api_flags(cleanup)
    _concurrency_flag(cleanup)
    cleanup.set_defaults(handler=cmd_cleanup)

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


def _without_httpx_command_line() -> None:
    """httpx imports its own command line (click, rich, pygments: a tenth of a second) wherever
    those happen to be installed, and onboard never runs it. A module marked absent is one httpx
    skips, as it does where they are not installed."""
    sys.modules.setdefault("httpx._main", None)


def main(argv: Sequence[str] | None = None) -> int:
    _without_httpx_command_line()
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except OnboardError as exc:
        print(f"onboard: {printable(str(exc), keep_lines=True)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("onboard: interrupted", file=sys.stderr)
        return 130

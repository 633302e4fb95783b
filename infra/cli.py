"""The ``jobledger`` command.

    jobledger run [--demo]       gateway, dispatcher, projector and worker in one process
    jobledger gateway            the HTTP gateway alone
    jobledger dispatcher         the ledger-to-broker dispatcher alone
    jobledger projector          the job-view projector alone
    jobledger worker             a worker (--app, --pool, --concurrency, --prefetch, --processes)
    jobledger submit TYPE CASE   submit a job over HTTP (--param k=v, --watch, --count N,
                                 --from FILE of NDJSON jobs, --run-at T or --delay-s S)
    jobledger token              print a token minted with the HS256 key (--tenant, --subject,
                                 --scope, --ttl-s); refused in production with the dev key
    jobledger watch JOB_ID       a job's live progress, from its SSE stream
    jobledger history JOB_ID     a job's history: times, actors, attempts, traces (--as-of)
    jobledger audit export       the tenant's events as NDJSON (--since, --until, --case, ...)
    jobledger verify             check the ledger's histories and the job view (exit 1 if not)
    jobledger replay             rebuild the job view from the ledger beside the live one
                                 (--verify: compare, exit 1 if they differ; --swap: swap it in)

The first Ctrl-C (or SIGTERM) stops taking work and lets running jobs finish; a
second one exits at once (unacked messages return to their queue).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from infra.errors import ConfigurationError, InfraError

# Each command imports what it needs when it runs: a worker never loads the HTTP
# server, and `jobledger --help` loads nothing but this module.

if TYPE_CHECKING:
    from infra.settings import Settings

Process = Callable[["Settings", asyncio.Event, asyncio.Event], Coroutine[None, None, None]]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except InfraError as exc:
        print(f"jobledger: {exc}", file=sys.stderr)
        return 2
    from infra import logs  # noqa: PLC0415

    logs.configure(args.log_level, json_lines=settings.observability.json_logs)
    # `kill -USR2 <pid>`: every thread's stack on stderr, for a process that will not stop.
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    try:
        if args.command in ("worker", "run"):
            _check_pools(settings)  # refused once, not by each worker process in turn
        # A worker or gateway of several processes: the command line of each one.
        child_argv = [*(argv if argv is not None else sys.argv[1:]), "--processes", "1"]
        if args.command == "worker" and settings.worker.processes > 1:
            from infra.supervisor import supervise  # noqa: PLC0415

            return supervise(settings.worker.processes, child_argv, settings.observability.ops_port)
        if args.command == "gateway" and settings.gateway.processes > 1:
            from infra.supervisor import supervise_gateway  # noqa: PLC0415

            gateway = settings.gateway
            return supervise_gateway(
                gateway.processes,
                child_argv,
                gateway.host,
                gateway.port,
                settings.observability.ops_port,
            )
        if args.command == "token":
            print(_token(args, settings))
            return 0
        if args.command == "audit" and args.action == "head":
            return _audit_head(settings)
        if args.command in ("submit", "watch", "history", "audit", "schedule"):
            return _client_command(args, settings)
        if args.command == "verify":
            return _verify(settings, args.head)
        if args.command == "replay":
            return _replay(args, settings)
        from infra import telemetry  # noqa: PLC0415

        installed = telemetry.configure(settings.otel, args.command)
        try:
            code = _run_to_the_end(_serve(args, settings))
        finally:
            installed.shutdown()
        _exit_without_stuck_threads(code)
        return code
    except InfraError as exc:
        print(f"jobledger: {exc}", file=sys.stderr)
        return 2


def _submit(args: argparse.Namespace, token: str | None) -> int:
    """One job (``--watch`` follows it), ``--count`` alike, or NDJSON ``--from``."""
    from infra import demo  # noqa: PLC0415

    if args.jobs_from is not None:
        if args.type is not None or args.param or args.count > 1:
            raise SystemExit("submit: --from takes the jobs from its lines, not from arguments")
        if args.jobs_from == "-":
            return asyncio.run(demo.submit_ndjson(args.url, sys.stdin, token))
        with open(args.jobs_from, encoding="utf-8") as lines:
            return asyncio.run(demo.submit_ndjson(args.url, lines, token))
    if args.type is None or args.case_id is None:
        raise SystemExit("submit: TYPE and CASE_ID, or --from FILE")
    params = dict(_param(p) for p in args.param)
    when = {"run_at": args.run_at, "delay_s": args.delay_s}
    if args.count > 1:
        return asyncio.run(
            demo.submit_alike(
                args.url,
                args.type,
                args.case_id,
                params,
                args.count,
                token,
                priority=args.priority,
                **when,
            )
        )
    return asyncio.run(
        demo.submit_and_watch(
            args.url,
            args.type,
            args.case_id,
            params,
            watch=args.watch,
            token=token,
            idempotency_key=args.idempotency_key,
            **when,
            priority=args.priority,
        )
    )


def _verify(settings: Settings, head: str | None) -> int:
    from infra import ledger_store  # noqa: PLC0415
    from infra.ledger_chain import Head  # noqa: PLC0415
    from infra.verify import verify  # noqa: PLC0415

    try:
        expected = Head.parse(head) if head else None
    except ValueError as exc:
        print(f"jobledger verify: {exc}", file=sys.stderr)
        return 2
    ledger_store.ensure_database(settings.postgres)
    ledger = ledger_store.open_ledger(settings.postgres, settings.ledger)
    try:
        report = verify(
            ledger,
            ledger_store.open_view(settings.postgres),
            settings.postgres.conninfo,
            head=expected,
        )
    finally:
        ledger.close()
    report.print(sys.stdout)
    return 0 if report.passed else 1


def _audit_head(settings: Settings) -> int:
    """The ledger's head (POSITION:HASH) on stdout: keep it elsewhere, and give it to
    ``jobledger verify --head`` later to show that nothing up to it changed."""
    import psycopg  # noqa: PLC0415

    from infra import ledger_chain, ledger_store  # noqa: PLC0415

    ledger_store.ensure_database(settings.postgres)
    ledger = ledger_store.open_ledger(settings.postgres, settings.ledger)
    try:
        table = ledger_store.events_table_name(ledger)
        with psycopg.connect(settings.postgres.conninfo) as conn:
            head = ledger_chain.read_head(conn, settings.postgres.schema_, table, None)
    finally:
        ledger.close()
    print(head)
    print(f"{head.events} chained events up to position {head.position}", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    import time  # noqa: PLC0415

    from infra import ledger_store  # noqa: PLC0415
    from infra.replay import Replay, ReplayError, only_replay, quiet_projector_logs  # noqa: PLC0415
    from infra.settings import LedgerSettings  # noqa: PLC0415

    pg = settings.postgres
    ledger_store.ensure_database(pg)
    quiet_projector_logs()
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    live = ledger_store.open_view(pg)
    try:
        with only_replay(pg):
            replay = Replay(
                pg,
                ledger,
                live,
                ledger_store.open_rebuild(pg, restart=args.restart),
                batch=args.batch,
                quiet=args.quiet,
                stop_after=args.stop_after,
            )
            try:
                began = time.perf_counter()
                position = (
                    replay.build_to_live()
                    if args.verify or args.swap
                    else (replay.build(replay.events.head()))
                )
                seconds = time.perf_counter() - began
                rate = replay.applied / seconds if seconds > 0 else 0.0
                done = (
                    f"{replay.applied:,} events rebuilt in {seconds:.1f} s ({rate:,.0f} events/s)"
                    if replay.applied
                    else "nothing to rebuild"
                )
                print(
                    f"replay: {done}; {replay.rebuild.view_table_name} is at ledger "
                    f"position {position:,}"
                )
                if replay.stopped:
                    print("replay: stopped early (--stop-after); run it again to resume")
                    return 3
                if args.verify:
                    found = replay.verify()
                    found.print(sys.stdout)
                    return 1 if found.count else 0
                if args.swap:
                    old, at = replay.swap()
                    print(
                        f"replay: swapped in at ledger position {at:,} (the live view was "
                        f"locked for {replay.locked_s * 1000:,.0f} ms); "
                        f"the former view is {old} (with {old}_tracking and "
                        f"{old}_unprojectable): drop them when done with them"
                    )
                return 0
            except KeyboardInterrupt:
                print(
                    f"replay: interrupted at ledger position {replay.rebuilt_position():,}; "
                    "run it again to resume (--restart: from the first event)",
                    file=sys.stderr,
                )
                return 130
    except ReplayError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    finally:
        ledger.close()
        live.datastore.close()


def _check_pools(settings: Settings) -> None:
    """The worker's ``--pool`` names, checked without loading the worker's modules."""
    from consumers.routing import pool_names  # noqa: PLC0415

    try:
        pool_names(settings.worker.pool)
    except ValueError as exc:
        raise ConfigurationError(f"--pool (JOBLEDGER_WORKER__POOL): {exc}") from None


def _run_to_the_end(serving: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run``, except that it does not wait for the threads of the loop's
    executor: one blocked in a call to a server that is down (a ledger write retried
    while PostgreSQL is unreachable) would hold a stopping process for as long as the
    server stays down. What such a call would have written is decided again by whoever
    receives its message next. A stop is a cancel, and none is lost in a library's
    ``asyncio.wait_for`` (infra/kept_cancels.py)."""
    from infra import kept_cancels  # noqa: PLC0415

    kept_cancels.install()
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(serving)
    finally:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        executor = getattr(loop, "_default_executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        loop.close()


def _exit_without_stuck_threads(code: int) -> None:
    """Exit now if threads still run (they would be joined at exit, for as long as what
    they wait for takes); otherwise return and exit as usual."""
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        logging.getLogger("jobledger").warning("exiting with calls still waiting on a server")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _client_command(args: argparse.Namespace, settings: Settings) -> int:
    from infra import auth  # noqa: PLC0415
    from infra.watch import bearer, watch  # noqa: PLC0415

    if args.command == "submit":
        return _submit(args, auth.client_token(settings))
    token = auth.client_token(settings) or ""
    if args.command == "schedule":
        from infra.schedule_cli import schedule_command  # noqa: PLC0415

        params = dict(_param(p) for p in getattr(args, "param", []))
        return schedule_command(args, token, params, sys.stdout)
    if args.command == "audit":
        from infra.audit_export import export  # noqa: PLC0415

        named = {
            "since": args.since,
            "until": args.until,
            "case_id": args.case,
            "job_type": args.job_type,
            "actor": args.actor,
            "after": args.after,
        }
        params = {k: str(v) for k, v in named.items() if v is not None}
        return export(args.url, bearer(token), params, sys.stdout.buffer)
    if args.command == "history":
        from infra.history import history  # noqa: PLC0415

        return history(args.url, args.job_id, token, as_of=args.as_of, out=sys.stdout)
    return asyncio.run(watch(args.url, args.job_id, token))


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    stopping, ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stopping.is_set():
            os._exit(130)
        logging.getLogger("jobledger").info("stopping: finishing running jobs (again to quit now)")
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    ops = None
    # The gateway answers them on its own port; one of several gateway processes (which
    # are alike on that port) on the ops port as well.
    from infra.gateway_sockets import FDS_ENV  # noqa: PLC0415

    several = os.environ.get(FDS_ENV) is not None
    if settings.observability.ops_port is not None and (args.command != "gateway" or several):
        from infra.health import serve_ops  # noqa: PLC0415

        ops = asyncio.create_task(serve_ops(settings, stopping), name="ops")
    watching = asyncio.create_task(_name_a_slow_stop(stopping), name="stop-watch")
    try:
        return await _run(args, settings, stopping, ready)
    finally:
        stopping.set()
        if ops is not None:
            await ops
        watching.cancel()


async def _name_a_slow_stop(stopping: asyncio.Event, after_s: float = 10.0) -> None:
    """A stop that lasts longer than ``after_s`` logs every task it still waits for,
    with where each one waits: the operator (or a test's log) sees what holds it."""
    await stopping.wait()
    await asyncio.sleep(after_s)
    me = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is me or task.done():
            continue
        where = " -> ".join(_awaiting(task.get_coro()))
        logging.getLogger("jobledger").warning(
            "stopping for %.0fs: task %s still waits in %s", after_s, task.get_name(), where
        )
    faulthandler.dump_traceback(all_threads=True)  # and every thread, as kill -USR2 would


def _awaiting(awaitable: object, depth: int = 24) -> list[str]:
    """Where a coroutine waits: each frame of its chain of awaits, outermost first."""
    found = []
    while awaitable is not None and depth > 0:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "ag_frame", None)
        frame = frame or getattr(awaitable, "gi_frame", None)
        if frame is None:
            found.append(type(awaitable).__name__)
            break
        path = frame.f_code.co_filename.rsplit("/", 2)
        found.append(f"{frame.f_code.co_name} ({'/'.join(path[-2:])}:{frame.f_lineno})")
        awaitable = (
            getattr(awaitable, "cr_await", None)
            or getattr(awaitable, "ag_await", None)
            or getattr(awaitable, "gi_yieldfrom", None)
        )
        depth -= 1
    return found


async def _run(
    args: argparse.Namespace, settings: Settings, stopping: asyncio.Event, ready: asyncio.Event
) -> int:
    process = _process(args.command)
    if args.command == "run" and args.demo:
        from infra import auth, kept_cancels  # noqa: PLC0415
        from infra.demo import demo  # noqa: PLC0415

        running = asyncio.create_task(process(settings, stopping, ready))
        await asyncio.wait(
            {running, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if running.done():
            await running
            return 1
        url = f"http://{settings.gateway.host}:{settings.gateway.port}"
        showing = asyncio.create_task(demo(url, auth.client_token(settings)))
        stop = asyncio.create_task(stopping.wait())
        # A stop while the demo still watches ends the demo too, or its stream would
        # keep reconnecting to the gateway that is shutting down.
        await asyncio.wait({showing, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not showing.done():
            await kept_cancels.cancel_and_wait(showing)
            await running
            return 0
        if args.exit_after_demo:
            stopping.set()
        await running
        return showing.result()
    await process(settings, stopping, ready)
    return 0


def _process(command: str) -> Process:
    """The process a command runs, imported only now."""
    match command:
        case "run":
            from infra.all_in_one import run_all  # noqa: PLC0415

            return run_all
        case "gateway":
            from infra.gateway_process import run_gateway  # noqa: PLC0415

            return run_gateway
        case "worker":
            from infra.worker_process import run_worker  # noqa: PLC0415

            return run_worker
        case "dispatcher":
            from infra.ledger_processes import run_dispatcher  # noqa: PLC0415

            async def dispatcher(s: Settings, stopping: asyncio.Event, _: asyncio.Event) -> None:
                await run_dispatcher(s, stopping)

            return dispatcher
        case "projector":
            from infra.ledger_processes import run_projector  # noqa: PLC0415

            async def projector(s: Settings, stopping: asyncio.Event, _: asyncio.Event) -> None:
                await run_projector(s, stopping)

            return projector
        case "scheduler":
            from infra.scheduler_process import run_scheduler  # noqa: PLC0415

            return run_scheduler
    raise ValueError(command)


def _settings(args: argparse.Namespace) -> Settings:
    """The settings (the environment, then the command line's flags), each checked
    against its bounds: a bad one is refused by name, with the variable that sets it."""
    from pydantic import BaseModel, ValidationError  # noqa: PLC0415

    from infra.settings import Settings  # noqa: PLC0415

    def flags(*names: str, command: str | None = None) -> dict[str, Any]:
        if command is not None and args.command != command:
            return {}
        return {n: v for n in names if (v := getattr(args, n, None)) is not None}

    def checked(section: str, model: BaseModel, update: dict[str, Any]) -> Any:
        try:
            # Only what was set, so that what was not keeps counting as not set.
            return type(model).model_validate({**model.model_dump(exclude_unset=True), **update})
        except ValidationError as exc:
            raise InfraError(_refused(exc, (section,))) from None

    try:
        settings = Settings()
    except ValidationError as exc:
        raise InfraError(_refused(exc, ())) from None
    worker = checked(
        "worker",
        settings.worker,
        {**flags("pool", "concurrency", "prefetch"), **flags("processes", command="worker")},
    )
    gateway = checked(
        "gateway", settings.gateway, {**flags("port"), **flags("processes", command="gateway")}
    )
    app = getattr(args, "app", None) or settings.app
    update: dict[str, Any] = {"worker": worker, "gateway": gateway, "app": app}
    if getattr(args, "dev", False):
        update["auth"] = settings.auth.model_copy(update={"environment": "development"})
    return settings.model_copy(update=update)


def _refused(exc: Any, section: tuple[str, ...]) -> str:
    """A settings error, one line a setting: its variable, what is wrong, and what was
    given."""
    lines = []
    for error in exc.errors():
        where = [*section, *(str(part) for part in error["loc"])]
        variable = "JOBLEDGER_" + "__".join(where).upper()
        lines.append(f"{variable}: {error['msg']} (given {error.get('input')!r})")
    return "invalid settings:\n  " + "\n  ".join(lines)


def _token(args: argparse.Namespace, settings: Settings) -> str:
    from infra import auth  # noqa: PLC0415

    return auth.mint_token(
        settings.auth,
        tenant=args.tenant,
        subject=args.subject,
        scopes=args.scope or [],
        ttl_s=args.ttl_s,
    )


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--param wants key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobledger", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("run", "every process in one, for development"),
        ("gateway", "the HTTP gateway"),
        ("dispatcher", "publish the deliveries the ledger calls for"),
        ("projector", "maintain the job view"),
        ("worker", "run jobs"),
        ("scheduler", "fire the cron schedules' ticks"),
    ]:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--app", help="module[:attribute] of the JobRegistry (JOBLEDGER_APP)")
        if name in ("run", "gateway"):
            sub.add_argument("--port", type=int, help="gateway port (JOBLEDGER_GATEWAY__PORT)")
        if name in ("run", "worker"):
            sub.add_argument(
                "--pool",
                help="worker pools to consume, a,b for several (JOBLEDGER_WORKER__POOL; "
                "run: every pool the app registers unless named)",
            )
            sub.add_argument("--concurrency", type=int, help="jobs run at once per worker")
            sub.add_argument("--prefetch", type=int, help="unacked messages per lane")
        if name == "worker":
            sub.add_argument("--processes", type=int, help="worker processes to run and keep up")
        if name == "gateway":
            sub.add_argument(
                "--processes",
                type=int,
                help="gateway processes on the one port, kept up (JOBLEDGER_GATEWAY__PROCESSES)",
            )
        if name == "run":
            sub.add_argument(
                "--dev",
                action="store_true",
                help="development: without a configured key, use the well-known development "
                "key (loopback only) and mint development tokens (JOBLEDGER_AUTH__ENVIRONMENT)",
            )
            sub.add_argument("--demo", action="store_true", help="submit a job and show it run")
            sub.add_argument("--exit-after-demo", action="store_true", help="then stop")
    checker = commands.add_parser(
        "verify",
        help="check the ledger: every history a path of the state machine, each attempt "
        "ended once, every event's hash intact, the job view equal to a replay; exit 1 if not",
    )
    checker.add_argument(
        "--head",
        metavar="POSITION:HASH",
        help="a head printed by `jobledger audit head`: the ledger up to it must fold to it",
    )
    replay = commands.add_parser(
        "replay",
        help="rebuild the job view from the first event beside the live one (resumable); "
        "--verify compares them (exit 1 if they differ), --swap swaps the rebuild in",
    )
    action = replay.add_mutually_exclusive_group()
    action.add_argument(
        "--verify", action="store_true", help="compare with the live view; exit 1 if they differ"
    )
    action.add_argument(
        "--swap", action="store_true", help="swap the rebuild in for the live view, atomically"
    )
    replay.add_argument("--restart", action="store_true", help="start over from the first event")
    replay.add_argument("--batch", type=int, default=20_000, help="events a transaction")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    dev_help = "development: the well-known development key (JOBLEDGER_AUTH__ENVIRONMENT)"
    _add_submit(commands, dev_help)
    token = commands.add_parser("token", help="print a bearer token minted with the HS256 key")
    token.add_argument("--dev", action="store_true", help=dev_help)
    token.add_argument("--tenant", required=True)
    token.add_argument("--subject", required=True)
    token.add_argument(
        "--scope",
        action="append",
        choices=["jobs:read", "jobs:write", "jobs:admin", "jobs:audit"],
        help="repeat for each scope",
    )
    token.add_argument("--ttl-s", type=float, default=3600, help="seconds until it expires")
    watcher = commands.add_parser("watch", help="a job's live progress (JOBLEDGER_TOKEN)")
    watcher.add_argument("--dev", action="store_true", help=dev_help)
    watcher.add_argument("job_id")
    watcher.add_argument("--url", default="http://127.0.0.1:8000")
    _add_audit_commands(commands, dev_help)
    _add_schedule_command(commands, dev_help)
    return parser


def _add_submit(commands: Any, dev_help: str) -> None:
    submit = commands.add_parser(
        "submit", help="submit jobs with the Python client (JOBLEDGER_TOKEN)"
    )
    submit.add_argument("--dev", action="store_true", help=dev_help)
    submit.add_argument("type", nargs="?")
    submit.add_argument("case_id", nargs="?")
    submit.add_argument("--param", action="append", default=[], help="key=value (JSON value)")
    submit.add_argument("--url", default="http://127.0.0.1:8000")
    submit.add_argument("--watch", action="store_true", help="follow it until it ends")
    submit.add_argument("--idempotency-key", help="a key used before returns the earlier job")
    submit.add_argument(
        "--priority",
        choices=("high", "normal", "low"),
        help="taken before lower ones by a worker (default: the job type's own)",
    )
    submit.add_argument(
        "--count", type=int, default=1, help="submit this many alike (POST /jobs/batch)"
    )
    when = submit.add_mutually_exclusive_group()
    when.add_argument("--run-at", help="not before this RFC 3339 time, e.g. 2026-12-24T09:00:00Z")
    when.add_argument("--delay-s", type=float, help="not before this many seconds from now")
    submit.add_argument(
        "--from",
        dest="jobs_from",
        metavar="FILE",
        help='NDJSON jobs, one {"type", "case_id", "params", "idempotency_key", "run_at" or '
        '"delay_s", "priority"} a line (\'-\': standard input), submitted through '
        "POST /jobs/batch",
    )


def _add_schedule_command(commands: Any, dev_help: str) -> None:
    schedule = commands.add_parser(
        "schedule",
        help="cron schedules of the token's tenant over HTTP: add, list, pause, resume, rm "
        "(JOBLEDGER_TOKEN)",
    )
    actions = schedule.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add NAME CRON TYPE CASE_ID [--param k=v …]")
    add.add_argument("name")
    add.add_argument("cron", help='"*/5 * * * *"; 6 fields for seconds')
    add.add_argument("type", help="the job type each tick submits")
    add.add_argument("case_id", help="the case its jobs work on")
    add.add_argument("--param", action="append", default=[], help="key=value (JSON value)")
    add.add_argument("--zone", help="an IANA time zone (default UTC)")
    add.add_argument(
        "--catch-up", choices=["all", "latest", "none"], help="missed ticks (default latest)"
    )
    add.add_argument("--paused", action="store_true", help="paused from the start")
    listing = actions.add_parser("list", help="the tenant's schedules")
    named = [listing]
    for action in ("pause", "resume", "rm"):
        one = actions.add_parser(action, help=f"{action} a schedule, by name or id")
        one.add_argument("name")
        named.append(one)
    for sub in (add, *named):
        sub.add_argument("--dev", action="store_true", help=dev_help)
        sub.add_argument("--url", default="http://127.0.0.1:8000")


def _add_audit_commands(commands: Any, dev_help: str) -> None:
    """``history`` and ``audit export``: HTTP clients, as ``watch`` is."""
    past = commands.add_parser(
        "history", help="a job's history: times, actors, attempts, traces (JOBLEDGER_TOKEN)"
    )
    past.add_argument("--dev", action="store_true", help=dev_help)
    past.add_argument("job_id")
    past.add_argument("--as-of", help="RFC 3339 time: the job as it stood then")
    past.add_argument("--url", default="http://127.0.0.1:8000")
    audit = commands.add_parser(
        "audit",
        help="export: the token's tenant's events as NDJSON over HTTP (jobs:audit scope); "
        "head: the ledger's head hash, read from PostgreSQL, to keep elsewhere",
    )
    audit.add_argument("action", choices=["export", "head"])
    audit.add_argument("--dev", action="store_true", help=dev_help)
    audit.add_argument("--since", help="RFC 3339: events recorded at or after")
    audit.add_argument("--until", help="RFC 3339: events recorded at or before")
    audit.add_argument("--case", help="only this case's jobs")
    audit.add_argument("--job-type", help="only jobs of this type")
    audit.add_argument("--actor", help="only events of this actor")
    audit.add_argument("--after", type=int, help="resume after this ledger position")
    audit.add_argument("--url", default="http://127.0.0.1:8000")


if __name__ == "__main__":
    raise SystemExit(main())

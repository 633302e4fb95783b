"""``jobledger schedule add|list|pause|resume|rm``: the token's tenant's cron
schedules, over HTTP with the Python client (``/schedules``). A schedule is named by
its name or its id."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from client import ApiError, Client, Schedule, Unreachable


def schedule_command(
    args: argparse.Namespace, token: str | None, params: dict[str, Any], out: TextIO
) -> int:
    """0, or 1 with the gateway's reason on stderr."""
    with Client(args.url, token, timeout=30) as client:
        try:
            return _run(client, args, params, out)
        except Unreachable as exc:
            print(f"the gateway at {args.url} is unreachable: {exc}", file=sys.stderr)
        except ApiError as exc:
            print(f"{exc.status}: {_reason(exc.detail)}", file=sys.stderr)
    return 1


def _run(client: Client, args: argparse.Namespace, params: dict[str, Any], out: TextIO) -> int:
    if args.action == "add":
        schedule = client.add_schedule(
            args.name,
            args.cron,
            args.type,
            args.case_id,
            params,
            zone=args.zone,
            catch_up=args.catch_up,
            paused=args.paused or None,
        )
        print(f"added {schedule.name} {schedule.id}: {_next(schedule)}", file=out)
        return 0
    if args.action == "list":
        for line in render(client.schedules()):
            print(line, file=out)
        return 0
    sid = _id_of(client, args.name)
    if args.action == "pause":
        print(f"paused {client.pause_schedule(sid).name}", file=out)
    elif args.action == "resume":
        schedule = client.resume_schedule(sid)
        print(f"resumed {schedule.name}: {_next(schedule)}", file=out)
    else:
        client.delete_schedule(sid)
        print(f"removed {args.name}", file=out)
    return 0


def render(schedules: list[Schedule]) -> list[str]:
    lines = [f"{'NAME':<24} {'CRON':<18} {'ZONE':<16} {'TYPE':<14} {'CASE':<14} CATCH-UP  NEXT"]
    for s in schedules:
        lines.append(
            f"{s.name:<24} {s.cron:<18} {s.zone:<16} {s.type:<14} {s.case_id:<14} "
            f"{s.catch_up:<9} {_next(s)}  {s.id}"
        )
    return lines


def _next(schedule: Schedule) -> str:
    if schedule.paused:
        return "paused"
    return f"next {schedule.next_tick.isoformat()}" if schedule.next_tick else "no next tick"


def _id_of(client: Client, name_or_id: str) -> str:
    for schedule in client.schedules():
        if name_or_id in (schedule.name, schedule.id):
            return schedule.id
    return name_or_id  # the gateway answers 404 for what it does not know


def _reason(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return detail if isinstance(detail, str) else json.dumps(detail)

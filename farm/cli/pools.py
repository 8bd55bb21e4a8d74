"""Pools from the command line: the queue, each pool's executors and capacity policy, the
policy's history and the autoscaler's decisions."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from farm.cli.jobs import Json, load_file
from farm.cli.output import Command, Group, err, flag, out, print_json
from farm.cli.root import app
from farm.client import ApiError, FarmClient

pools_app = typer.Typer(cls=Group, help="Pools: their queues, executors and policies.", no_args_is_help=True)
policy_app = typer.Typer(cls=Group, help="A pool's capacity policy: show, change, its history, the autoscaler's decisions.",
                         no_args_is_help=True)  # fmt: skip
app.add_typer(pools_app, name="pools")
app.add_typer(policy_app, name="policy")

FAILURE_SHOWN_S = 3600  # `farm queue` mentions an executor start failure for an hour


@app.command(cls=Command)
def queue(
    as_json: Json = False,
    executors: Annotated[bool, flag("--executors", "-e", help="Every executor and where it runs (admin token).")] = False,
) -> None:
    """Each pool's queue and executors."""
    if executors:
        _executors(as_json)
        return
    data = FarmClient().queue()
    if as_json:
        print_json(data)
        return
    table = Table("pool", "queued", "running", "oldest", "starting", "idle", "busy", "draining")
    for p in data["pools"]:
        e = p["executors"]
        table.add_row(p["name"], str(p["queued"]), str(p["running"]), f"{p['oldest_wait_s']:.1f}s",
                      str(e["starting"]), str(e["idle"]), str(e["busy"]), str(e["draining"]))  # fmt: skip
    out.print(table)
    for p in data["pools"]:
        failure = p.get("last_start_failure")
        if failure and time.time() - failure["at_ms"] / 1000 < FAILURE_SHOWN_S:
            ago = max(0, int(time.time() - failure["at_ms"] / 1000))
            err.print(f"[yellow]pool {p['name']}: executor {failure['executor']} could not start {ago}s ago:[/yellow] {failure['reason']}",
                      highlight=False, soft_wrap=True)  # fmt: skip
    for why in data.get("degraded", []):
        err.print(f"[red]degraded:[/red] {why}", highlight=False, soft_wrap=True)
    if restarts := data.get("restarts"):
        out.print("restarted so far: " + ", ".join(f"{name} {n}×" for name, n in sorted(restarts.items())), highlight=False)


@pools_app.command("ls", cls=Command)
def pools_ls(as_json: Json = False) -> None:
    """Every pool: queue, executors, and its capacity policy."""
    data = FarmClient().pools()
    if as_json:
        print_json(data)
        return
    table = Table("pool", "queued", "running", "executors", "policy", "version")
    for p in data["pools"]:
        policy = p.get("policy") or {}
        kind = (policy.get("policy") or {}).get("kind", "none (static)")
        table.add_row(p["name"], str(p["queued"]), str(p["running"]), str(sum(p["executors"].values())), kind,
                      str(policy.get("version") or ""))  # fmt: skip
    out.print(table)


@pools_app.command("history", cls=Command)
def pools_history(pool: str, as_json: Json = False) -> None:
    """What the pool's demand history holds: what a predictive policy learns from when it is
    switched on or seeded (`farm policy seed`)."""
    data = FarmClient().demand_history(pool)
    if as_json:
        print_json(data)
        return
    if not data["jobs"]:
        out.print(f"pool {pool}: no demand kept yet (kept {data['keep_weeks']} weeks)", highlight=False)
        return
    out.print(f"pool {pool}: {data['jobs']} jobs over {data['hours']} hours, {data['first']} to {data['last']}"
              f" (kept {data['keep_weeks']} weeks; seeded {data['seeded']}×)", highlight=False)  # fmt: skip


@policy_app.command("get", cls=Command)
def policy_get(pool: str, as_json: Json = False) -> None:
    """The pool's policy, and who set it when."""
    data = FarmClient().policy(pool)
    if as_json:
        print_json(data)
        return
    if not data.get("policy"):
        out.print(f"pool {pool} has no capacity policy (its executors are static)", highlight=False)
        return
    out.print(f"version {data['version']}, set by {data['updated_by']} at {data['updated_at']}", highlight=False)
    out.print_json(json.dumps(data["policy"]))


# `-f` is --follow wherever a command has it (submit, rerun, logs, run submit), as in `tail -f`
# and `kubectl logs -f`: a file is an argument. `farm policy set -f FILE` and `policy seed -t`
# (now --timestamps' letter) were the exceptions; they are refused with the way to say it now.
def _moved(old: str, now: str, new: str) -> Any:
    def refuse(value: Any) -> Any:
        if value is not None:
            raise typer.BadParameter(f"{old} is {now} in every farm command now; {new}", param_hint=old)
        return value

    return typer.Option(old, hidden=True, callback=refuse, show_default=False)


@policy_app.command("set", cls=Command)
def policy_set(
    pool: str,
    file: Annotated[Optional[str], typer.Argument(help="The policy (YAML/JSON), '-' for stdin.", show_default=False)] = None,
    file_option: Annotated[Optional[str], typer.Option("--file", help="The policy file, as an option (as before).",
                                                       show_default=False)] = None,
    old_f: Annotated[Optional[str], _moved("-f", "--follow", "give the file as an argument: farm policy set POOL FILE")] = None,
    if_match: Annotated[Optional[str], typer.Option("--if-match", help='Refuse (409) unless the policy is at this version '
                                                    '(3, or the ETag "3"; * for any policy).', show_default=False)] = None,
    seed_trace: Annotated[Optional[Path], typer.Option("--seed-trace", help="First seed the pool's demand history from this "
                                                       "trace (as `farm policy seed`).", exists=True, dir_okay=False)] = None,
    trace_pool: TracePool = None,
    as_json: Json = False,
) -> None:  # fmt: skip
    """Replace the pool's policy (admin token) with the one in FILE; try it with `farm simulate` first.

    A field the policy's kind does not have is refused, naming the one it is close to."""
    if (file is None) == (file_option is None):
        raise typer.BadParameter("give the policy file once: farm policy set POOL FILE", param_hint="FILE")
    policy = load_file(file or file_option or "", "a policy file")
    client = FarmClient()
    if seed_trace is not None:
        _seed(client, pool, seed_trace, trace_pool, as_json)
    try:
        data = client.set_policy(pool, policy, if_match)
    except ApiError as e:
        _untagged(e, policy.get("kind"))
        raise
    if as_json:
        print_json(data)
    else:
        out.print(f"pool {pool}: policy version {data['version']}", highlight=False)


SEED_PART_BYTES = 512 * 1024  # a seed request's body stays under the API's 1 MiB default


TracePool = Annotated[Optional[str], typer.Option("--trace-pool", help="Take the trace's rows of this pool (default: POOL's "
                                                  "rows if it has any, else every row).")]  # fmt: skip


@policy_app.command("seed", cls=Command)
def policy_seed(
    pool: str,
    trace: Annotated[Path, typer.Option("--trace", help="CSV: submitted_ts,duration_s,pool,tenant (one job a row).",
                                        exists=True, dir_okay=False)],
    old_t: Annotated[Optional[str], _moved("-t", "--timestamps", "use --trace FILE")] = None,
    trace_pool: TracePool = None,
    as_json: Json = False,
) -> None:  # fmt: skip
    """Seed the pool's demand history from a trace (admin token): a farm moving from Jenkins or
    Actions gives the predictive policy the weeks it already knows, so it has no cold week.
    The trace's hours move by whole weeks to end before now; the seed is audited in
    `farm policy history`; the autoscaler learns from it on its next turn."""
    results = _seed(FarmClient(), pool, trace, trace_pool, as_json)
    if as_json:
        print_json(results[-1] if len(results) == 1 else results)


def _seed(client: FarmClient, pool: str, trace: Path, trace_pool: str | None, quiet: bool) -> list[dict[str, Any]]:
    """Send the trace's rows of the pool as hours of demand history, in parts under the
    API's body limit; what each part wrote."""
    from farm.sim.history import Hour, from_trace
    from farm.sim.trace import TraceError, parse

    try:
        with trace.open() as f:
            traces = {t.pool: t for t in parse(f, split_pools=True)}
    except (OSError, TraceError) as e:
        err.print(f"[red]cannot read trace:[/red] {e}")
        raise typer.Exit(2) from e
    name = trace_pool or (pool if pool in traces else None)
    if name is not None and name not in traces:
        err.print(f"[red]the trace has no rows of pool {name!r}[/red]; its pools: {', '.join(sorted(traces))}", highlight=False)
        raise typer.Exit(2)
    chosen = [traces[name]] if name is not None else list(traces.values())  # the named pool's rows, or every row
    merged: dict[int, Hour] = {}
    for t in chosen:
        for h, hour in from_trace(t).items():
            merged[h] = merged[h].merge(hour) if h in merged else hour
    total = sum(len(t) for t in chosen)
    hours = [{"hour": h, "arrivals": doc["a"], "durations": doc["d"]} for h, doc in
             ((h, hour.to_doc()) for h, hour in sorted(merged.items()))]  # fmt: skip
    parts: list[list[dict[str, Any]]] = [[]]
    size = 0
    for h in hours:
        n = len(json.dumps(h))
        if parts[-1] and size + n > SEED_PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(h)
        size += n
    results = []
    for i, part in enumerate(parts, start=1):
        if len(parts) > 1 and not quiet:
            err.print(f"part {i}/{len(parts)}: {len(part)} hours", highlight=False)
        results.append(client.seed_policy(pool, part, hours[-1]["hour"], more=i < len(parts)))  # one seed, however many parts
    if not quiet:
        written = sum(r["hours"] for r in results)
        left_out = sum(r["hours_left_out"] for r in results)
        out.print(f"pool {pool}: seeded {sum(r['jobs'] for r in results)} of the trace's {total} jobs over {written} hours"
                  f" (moved {results[-1]['weeks_moved']} weeks to end before now; {left_out} hours older than the history"
                  " kept left out)", highlight=False)  # fmt: skip
    return results


@policy_app.command("history", cls=Command)
def policy_history(pool: str, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20, as_json: Json = False) -> None:
    """Who changed the pool's policy, when, and from what to what."""
    data = FarmClient().policy_history(pool, limit)
    if as_json:
        print_json(data)
        return
    table = Table("version", "by", "at", "change")
    for c in data["changes"]:
        if seed := c.get("seed"):
            table.add_row(str(c["version"]), c["by"], str(c["at"]), f"seed: {seed['jobs']} jobs, {seed['hours']} hours")
            continue
        table.add_row(str(c["version"]), c["by"], str(c["at"]), "\n".join(changes(c.get("before"), c.get("after"))))
    out.print(table, highlight=False)


@policy_app.command("decisions", cls=Command)
def policy_decisions(pool: str, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20, as_json: Json = False) -> None:
    """The autoscaler's recent decisions for the pool, with their reasons."""
    data = FarmClient().decisions(pool, limit)
    if as_json:
        print_json(data)
        return
    table = Table("at", "now", "want", "reason")
    for d in data["decisions"]:
        shown = lambda v: "-" if v is None else str(v)  # noqa: E731 - a failed turn decided nothing
        table.add_row(str(d["at"])[11:19], shown(d.get("current")), shown(d.get("desired")),
                      f"{d['reason']}: {d['error']}" if d.get("error") else d["reason"])  # fmt: skip
    out.print(table)


def _executors(as_json: bool) -> None:
    data = FarmClient().executors()
    if as_json:
        print_json(data)
        return
    table = Table("executor", "pool", "state", "job", "node", "ray node")
    for e in data["executors"]:
        table.add_row(e["id"], e["pool"], e["state"], (e.get("job") or "")[:12], e.get("address") or e.get("node") or "",
                      (e.get("ray_node") or "")[:12])  # fmt: skip
    out.print(table)


def _untagged(e: ApiError, kind: Any) -> None:
    """A refused policy's field paths start with its kind (the tag of the union of kinds),
    a level its file does not have: left out, they read as the file's own."""
    if e.status == 422 and isinstance(e.detail, list):
        for d in e.detail:
            loc = d.get("loc") if isinstance(d, dict) else None
            if isinstance(loc, list) and loc[:2] == ["body", kind]:
                d["loc"] = ["body", *loc[2:]]


def _defaults(kind: Any) -> dict[str, Any]:
    from pydantic import TypeAdapter, ValidationError

    from farm.autoscale.kinds import CapacityPolicy

    try:
        return TypeAdapter(CapacityPolicy).validate_python({"kind": kind}).model_dump(mode="json")
    except ValidationError:
        return {}


def _value(v: Any) -> str:
    return "-" if v is _ABSENT else v if isinstance(v, str) else json.dumps(v, separators=(", ", ": "))


_ABSENT = object()


def changes(before: Any, after: Any) -> list[str]:
    """What one version of a policy changed from the one before, a line per field
    (`field: before → after`; the kind first, `-` for a field the other kind lacks)."""
    if not isinstance(after, dict):
        return ["policy removed"] if isinstance(before, dict) else ["no policy"]
    if not isinstance(before, dict):  # the first: what it sets otherwise than its kind's defaults
        defaults = _defaults(after.get("kind"))
        return [f"set: {after.get('kind', '?')}"] + [f"{k}: {_value(v)}" for k, v in after.items()
                                                     if k != "kind" and defaults.get(k, _ABSENT) != v]  # fmt: skip
    keys = ["kind", *sorted((set(before) | set(after)) - {"kind"})]
    lines = [f"{k}: {_value(before.get(k, _ABSENT))} → {_value(after.get(k, _ABSENT))}"
             for k in keys if before.get(k, _ABSENT) != after.get(k, _ABSENT)]  # fmt: skip
    return lines or ["no change"]

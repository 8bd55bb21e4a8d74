"""`farm simulate`: replay a recorded trace through a capacity policy, or all of them.

Progress goes to stderr, one task per policy (per sweep, per single run): a rich bar on a
terminal that advances within each replay, and elsewhere (CI logs, a pipe) one line as a
task starts, one per week a past-tuned peer's knob is chosen for, and one as it ends. The
table fits 80 columns; `--wide` adds the rest (a past-tuned knob's value week by week);
`--weekly` adds each policy's executor-hours and p95 by week, which sum to the table's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from farm.autoscale.kinds import DEFAULT_LEAD_S
from farm.cli.output import Command, err, flag, out
from farm.cli.root import app

if TYPE_CHECKING:
    from farm.sim.simulator import Result
    from farm.sim.trace import Trace
    from farm.sim.weekly import Observed, Week

MISS = "✗"  # marks a p95 over the target, in color or not


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _usage(text: str) -> typer.Exit:
    err.print(text, style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _slice(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    """--since/--until as epoch seconds, refused unless ISO dates with since before until."""
    from farm.sim.trace import instant

    cut: list[float | None] = []
    for option, text in (("--since", since), ("--until", until)):
        try:
            cut.append(None if text is None else instant(text))
        except ValueError:
            raise _usage(f"{option} takes an ISO 8601 date (2025-09-01 or 2025-09-01T12:00), not {text!r}") from None
    if cut[0] is not None and cut[1] is not None and cut[0] >= cut[1]:
        raise _usage(f"--since ({since}) must be before --until ({until})")
    return cut[0], cut[1]


def _parse_sweep(text: str) -> tuple[str, list[float | int]]:
    """`buffer=10:24:2` -> ("buffer", [10, 12, ..., 24])."""
    key, sep, rng = text.partition("=")
    try:
        if not sep or not key:
            raise ValueError
        a, b, step = (float(x) for x in rng.split(":"))
    except ValueError:
        raise _usage(f"--sweep takes KEY=FROM:TO:STEP (e.g. buffer=10:24:2), not {text!r}") from None
    if step <= 0 or b < a:
        raise _usage(f"--sweep needs FROM <= TO and STEP > 0, not {text!r}")
    n = int(round((b - a) / step)) + 1
    return key, [_int_if_whole(a + i * step) for i in range(n)]


def _int_if_whole(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(v, 6)


def _brief(value: Any, key: str = "", *, full: bool = False) -> str:
    """Parameters in a few words: {"idle_count": 19, "periods": [{"hours_of_week": [..40..]}]}
    -> "idle_count=19 periods=[hours_of_week=40h idle_count=0]". A long list of numbers (a
    past-tuned knob, a value a week) is counted, or with `full` given as "[0 4 5 5 6]"."""
    if isinstance(value, dict):
        return " ".join(f"{k}={_brief(v, k, full=full)}" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        if key == "hours_of_week":
            return f"{len(value)}h"
        if len(value) > 4 and all(isinstance(x, (int, float)) for x in value):
            return "[" + " ".join(map(_brief, value)) + "]" if full else f"[{len(value)} values]"
        return "[" + ", ".join(_brief(x, full=full) for x in value) + "]"
    return value if isinstance(value, str) else json.dumps(value)


def _replaying(tr: Trace) -> str:
    return f"replaying {len(tr):,} jobs over {(tr.submitted[-1] - tr.submitted[0]) / 86400:.1f} days…"


def _figures(r: Result) -> str:
    return f"p95 {r.wait_p95_s:.0f}s, {r.executor_hours:,.0f} executor-h"


class _Task:
    """One line of progress: a policy being tuned or replayed, a sweep, the plot. Its bar
    counts replays (at most `runs`), in thousandths of one as each replay goes."""

    def __init__(self, tracker: _Tracker, label: str, runs: int, doing: str) -> None:
        self.tracker, self.label, self.runs_done = tracker, label, 0
        self.total = max(1, runs) * 1000
        self.t0 = time.monotonic()
        if tracker.bars is not None:
            self.id = tracker.bars.add_task(doing, total=self.total, label=label)
        else:
            tracker.line(f"{label}: {doing}")

    def replay(self, done: int, total: int) -> None:
        """The simulator's hook: `done` of `total` jobs have arrived in the current replay."""
        if done >= total:
            self.runs_done += 1
            done = 0
        if self.tracker.bars is not None:
            completed = self.runs_done * 1000 + done * 1000 // total
            self.tracker.bars.update(self.id, completed=min(self.total - 1, completed))

    def note(self, msg: str) -> None:
        """A bar's description; where no bar is drawn, a line for a milestone (a week tuned) only."""
        from farm.sim.tune import Milestone

        if self.tracker.bars is not None:
            self.tracker.bars.update(self.id, description=msg)
        elif isinstance(msg, Milestone):
            self.tracker.line(f"{self.label}: {msg}")

    def finish(self, summary: str) -> None:
        if self.tracker.bars is not None:
            self.tracker.bars.update(self.id, completed=self.total, description=summary)
        else:
            self.tracker.line(f"{self.label}: {summary} ({time.monotonic() - self.t0:.1f} s)")


def _interactive(console: Console) -> bool:
    """A terminal a bar can redraw itself in: not a file, a pipe or a CI log, even where
    FORCE_COLOR makes rich call those terminals (TTY_COMPATIBLE=1 says a log can)."""
    if not console.is_terminal or console.is_dumb_terminal:
        return False
    if os.environ.get("TTY_COMPATIBLE") == "1":
        return True
    try:
        return bool(console.file.isatty())
    except (AttributeError, ValueError):
        return False


class _Tracker:
    """Progress on `console` (stderr): rich bars on a terminal, else a line per task start and end."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars = None
        if _interactive(console):
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
            from rich.table import Column

            self.bars = Progress(
                SpinnerColumn(finished_text="✓"),
                TextColumn("{task.fields[label]}", markup=False, table_column=Column(no_wrap=True)),
                BarColumn(bar_width=12),
                TimeElapsedColumn(),
                TextColumn("{task.description}", markup=False,
                           table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),  # fmt: skip
                console=console, expand=True,
            )  # fmt: skip

    def __enter__(self) -> _Tracker:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def task(self, label: str, runs: int, doing: str) -> _Task:
        return _Task(self, label, runs, doing)


@app.command(cls=Command)
def simulate(
    trace: Annotated[Path, typer.Option("--trace", metavar="PATH", show_default=False,
                                        help="The trace: a CSV with the columns submitted_ts, duration_s, pool "
                                        "and tenant, one job a row (and observed_queue_s, the wait the CI system saw, "
                                        "if it has it).")],
    policy: Annotated[str, typer.Option(metavar="NAME", help="reactive, scheduled, predictive, jenkins, gitlab, arc, "
                                        "keda, or all: farm's predictive and every peer, tuned to the target (--tune)."
                                        )] = "predictive",
    tune_by: Annotated[str, typer.Option("--tune", metavar="HOW", help="With --policy all, how the peers' knobs are "
                                         "chosen: past (re-chosen every week from the weeks before it, as an operator "
                                         "retuning weekly can) or hindsight (once, from the whole trace: an oracle).")
                       ] = "past",
    warm_weeks: Annotated[int, typer.Option(min=0, max=520, metavar="K", help="Replay the trace's first K weeks as every "
                                            "policy's warm-up on known demand and score only the weeks after (a pool "
                                            "moving to farm with its history as the seed).")] = 0,
    warm_as_kept: Annotated[bool, flag("--warm-as-kept", help="With --warm-weeks: replay the warm-up weeks as the "
                                       "live farm keeps a pool's demand (each arrival's second, its hour's durations) "
                                       "rather than the trace's own rows.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", show_default=False,
                                                      help="Set a policy parameter (a JSON value); repeat for more.")] = None,
    sweep: Annotated[Optional[str], typer.Option(metavar="KEY=FROM:TO:STEP", show_default=False,
                                                 help="Replay each value of one parameter, from FROM to TO by STEP, "
                                                 "and name the cheapest that meets the p95 target.")] = None,
    lead: Annotated[float, typer.Option(metavar="SECONDS", help="Provisioning lead time: from asking for an executor "
                                        "to it taking a job.")] = DEFAULT_LEAD_S,
    target_p95: Annotated[float, typer.Option(metavar="SECONDS", help="The p95 queue-wait target: the peers are tuned "
                                              "to it, and a row over it is marked ✗.")] = 15.0,
    since: Annotated[Optional[str], typer.Option(metavar="DATE", show_default=False, help="Replay only the jobs submitted "
                                                 "from DATE on (ISO 8601: 2025-09-01 or 2025-09-01T12:00; UTC unless "
                                                 "it names its zone).")] = None,
    until: Annotated[Optional[str], typer.Option(metavar="DATE", show_default=False, help="Replay only the jobs submitted "
                                                 "before DATE (ISO 8601, as --since).")] = None,
    weekly: Annotated[bool, flag("--weekly", help="Also show each policy's executor-hours and p95 wait week by week "
                                 "(one more replay a week per result); with --json, a \"weeks\" list per row.")] = False,
    split_pools: Annotated[bool, flag("--split-pools", help="Replay each pool of the trace on its own, instead of all "
                                      "rows as one pool.")] = False,
    as_json: Annotated[bool, flag("--json", help="Print a JSON array of the results instead of a table.")] = False,
    wide: Annotated[bool, flag("--wide", help="Show every column: params, busy-h, wait p50 and p99, reversals/h, "
                               "clairvoyant-h, and the pool.")] = False,
    plot: Annotated[Optional[Path], typer.Option(metavar="PATH", show_default=False,
                                                 help="Also write a PNG of demand against capacity over the trace's "
                                                 "second week (up to 8 of the results).")] = None,
) -> None:  # fmt: skip
    """Replay a recorded trace through a capacity policy (or all of them, the peers tuned to the target)."""
    from farm.sim import tune
    from farm.sim import weekly as by_week
    from farm.sim.trace import TraceError, parse

    cut = _slice(since, until)
    try:
        with trace.open() as f:
            traces = parse(f, split_pools=split_pools, since=cut[0], until=cut[1])
    except (OSError, TraceError) as e:
        err.print(f"[red]cannot read trace:[/red] {e}")
        raise typer.Exit(2) from e
    as_read = {tr.pool: tr for tr in traces}  # the observed waits, even once --warm-as-kept rebuilds the warm-up
    if tune_by not in ("past", "hindsight"):
        raise _usage(f"--tune is past or hindsight, not {tune_by!r}")
    if policy != "all" and policy not in tune.POLICIES:
        err.print(f"[red]unknown policy {policy!r}[/red]; use one of {', '.join([*tune.POLICIES, 'all'])}")
        raise typer.Exit(2)
    params: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise _usage(f"--set takes KEY=VALUE, not {item!r}")
        params[key] = _parse_value(value)
    if policy == "predictive":
        params.setdefault("target_p95_s", target_p95)
    try:
        scored = {tr.pool: tune.scored_from(tr, warm_weeks) for tr in traces}
    except ValueError as e:
        raise _usage(f"--warm-weeks {warm_weeks}: {e}") from e
    seen = {pool: by_week.observed(tr, -math.inf if scored[pool] is None else scored[pool]) for pool, tr in as_read.items()}
    if warm_as_kept:
        from farm.sim.history import as_kept

        if not warm_weeks:
            raise _usage("--warm-as-kept replays the warm-up weeks as kept: give --warm-weeks too")
        traces = [as_kept(tr, scored[tr.pool]) for tr in traces]  # type: ignore[arg-type]
    swept: tuple[str, list[float | int]] | None = None
    if sweep:
        if policy == "all":
            raise _usage("--sweep varies one policy's parameter: name that policy with --policy, not all")
        swept = _parse_sweep(sweep)

    results: list[Result] = []
    notes: list[str] = []
    with _Tracker(err) as tracker:
        for tr in traces:
            prefix = f"{tr.pool} " if len(traces) > 1 else ""
            try:
                if policy == "all":
                    for stage in tune.stages(tr, target_p95, lead, tune_by, warm_weeks):
                        knob = tune.KNOBS.get(stage.policy)
                        task = tracker.task(prefix + stage.policy, stage.max_runs,
                                            f"tuning {knob}…" if knob else "drawing its weeks…" if stage.policy == tune.CALENDAR
                                            else _replaying(tr))  # fmt: skip
                        r = stage.go(task.note, task.replay)
                        if r is None:
                            task.finish(f"no {knob} up to 128 meets p95 ≤ {target_p95:g}s")
                            notes.append(f"{prefix}{stage.policy}: no {knob} up to 128 meets p95 ≤ {target_p95:g}s")
                        else:
                            task.finish(f"{_brief(r.params)}: {_figures(r)}")
                            results.append(r)
                elif swept is not None:
                    key, values = swept
                    task = tracker.task(f"{prefix}{policy} {key}", len(values), f"{len(values)} values…")
                    for v in values:
                        r = tune.run(tr, policy, {**params, key: v}, lead, replay=task.replay, score_from=scored[tr.pool])
                        task.note(f"{key}={v}: {_figures(r)}")
                        results.append(r)
                    task.finish(f"{len(values)} values replayed")
                else:
                    task = tracker.task(prefix + policy, 1, _replaying(tr))
                    r = tune.run(tr, policy, params, lead, replay=task.replay, score_from=scored[tr.pool])
                    task.finish(_figures(r))
                    results.append(r)
            except (ValidationError, ValueError) as e:
                err.print(f"[red]invalid policy:[/red] {e}")
                raise typer.Exit(2) from e
        if plot is not None and results:
            from farm.sim.plot import week_plot
            from farm.sim.simulator import simulate as replay

            chosen = results[:8]
            by_pool = {t.pool: t for t in traces}
            task = tracker.task("plot", len(chosen), "replaying to record…")
            rerun = [replay(by_pool[r.pool], r.schedule[0][1] if r.schedule else tune.build(r.policy, r.params), lead_s=lead,
                            name=r.policy, params=r.params, record=True, progress=task.replay, schedule=r.schedule)
                     for r in chosen]  # fmt: skip
            task.note("drawing…")
            week_plot(rerun, plot)
            task.finish(f"written to {plot}")
        weeks: list[list[by_week.Week]] = []
        for r in results if weekly else ():
            by_pool = {t.pool: t for t in traces}
            n = len(by_week.starts(by_pool[r.pool], warm_weeks))
            label = (f"{r.pool} " if len(traces) > 1 else "") + r.policy + (f" {swept[0]}={r.params.get(swept[0])}" if swept else "")
            task = tracker.task(f"{label} by week", n, f"replaying {n} week(s) one by one…")
            weeks.append(by_week.weeks(by_pool[r.pool], r, warm_weeks=warm_weeks, replay=task.replay, seen=as_read[r.pool]))
            task.finish(f"{n} week(s): {', '.join(f'{w.executor_hours:,.0f}' for w in weeks[-1])} executor-h")

    results = [dataclasses.replace(r, warm_weeks=warm_weeks) for r in results]
    if as_json:
        rows = [r.row() | (seen[r.pool].row() if seen[r.pool] else {}) for r in results]
        for row, ws in zip(rows, weeks, strict=False):
            row["weeks"] = [w.row() for w in ws]
        print(json.dumps(rows))
    else:
        _print_table(results, target_p95, wide=wide, multi_pool=len(traces) > 1, swept=swept[0] if swept else None)
        for pool, o in seen.items():
            if o is not None:
                out.print(f"{pool + ': ' if len(traces) > 1 else ''}observed by the CI system (observed_queue_s, {o.jobs:,} jobs): "
                          f"wait p50 {o.wait_p50_s:.0f}s, p95 {o.wait_p95_s:.0f}s", markup=False, highlight=False, soft_wrap=True)  # fmt: skip
        if weeks:
            _print_weekly(results, weeks, seen, target_p95, swept=swept[0] if swept else None)
        for note in notes:
            out.print(note, markup=False, highlight=False)
        for tr in traces if swept is not None else ():
            prefix = f"{tr.pool}: " if len(traces) > 1 else ""
            meeting = [r for r in results if r.pool == tr.pool and r.wait_p95_s <= target_p95]
            if meeting:
                best = min(meeting, key=lambda r: r.executor_hours)
                out.print(f"{prefix}cheapest meeting p95 ≤ {target_p95:g}s: {json.dumps(best.params)} "
                          f"({best.executor_hours:,.0f} executor-hours)", markup=False, highlight=False)  # fmt: skip
            else:
                out.print(f"{prefix}no setting in the sweep meets p95 ≤ {target_p95:g}s", markup=False, highlight=False)
    if plot is not None:
        (err if as_json else out).print(f"plot written to {plot}", markup=False, highlight=False, soft_wrap=True)


_TUNING = {"past": "past weeks", "hindsight": "oracle"}


def _print_table(results: list[Result], target_p95: float, *, wide: bool, multi_pool: bool, swept: str | None) -> None:
    """80 columns by default (policy, the swept value, executor-h, efficiency, p95, killed; the
    pool when there are several); every column under `wide`, at the width it needs. Cells are
    Text, not markup: a pool's name or the params ("periods=[...]") show as they are."""

    def p95(r: Result) -> Text:
        if r.wait_p95_s > target_p95:
            return Text(f"{r.wait_p95_s:.0f}s {MISS}", style="red")
        return Text(f"{r.wait_p95_s:.0f}s")

    columns: list[tuple[str, Callable[[Result], Text | str], bool, bool]] = [  # header, cell, shown by default, a figure
        ("pool", lambda r: Text(r.pool), multi_pool, False),
        ("policy", lambda r: Text(r.policy), True, False),
        ("tuning", lambda r: Text(_TUNING.get(r.tuning, "")), any(r.tuning for r in results), False),
        ("params", lambda r: Text(_brief(r.params, full=True)), False, False),
        *([(swept, lambda r: Text(str(r.params.get(swept, ""))), True, True)] if swept and not wide else []),
        ("executor-h", lambda r: f"{r.executor_hours:,.0f}", True, True),
        ("busy-h", lambda r: f"{r.busy_hours:,.0f}", False, True),
        ("efficiency", lambda r: f"{r.efficiency:.1%}", True, True),
        ("wait p50", lambda r: f"{r.wait_p50_s:.0f}s", False, True),
        ("wait p95", p95, True, True),
        ("wait p99", lambda r: f"{r.wait_p99_s:.0f}s", False, True),
        ("killed", lambda r: str(r.killed_jobs), True, True),
        ("reversals/h", lambda r: f"{r.reversals_per_hour:.2f}", False, True),
        ("clairvoyant-h", lambda r: f"{r.clairvoyant_hours:,.0f}", False, True),
    ]
    shown = [(header, cell, figure) for header, cell, default, figure in columns if default or wide]
    table = Table()
    for header, _, figure in shown:
        table.add_column(header, justify="right" if figure else "left", no_wrap=figure)
    for r in results:
        table.add_row(*(cell(r) for _, cell, _ in shown))
    _show(table, wide=wide)
    if any(r.wait_p95_s > target_p95 for r in results):
        out.print(f"{MISS} misses the p95 target of {target_p95:g}s", markup=False, highlight=False)
    if any(r.tuning == "past" for r in results):
        out.print("past weeks: knob re-chosen weekly from the weeks before (week 1: the default)", markup=False, highlight=False)
    if any(r.tuning == "hindsight" for r in results):
        out.print("oracle: tuned with hindsight (oracle) on this very trace, which no operator can", markup=False, highlight=False)


def _show(table: Table, *, wide: bool) -> None:
    if wide and not out.is_terminal:
        # a file or a pipe has no width of its own (rich assumes 80): give the wide table what it needs
        from rich.measure import Measurement

        need = Measurement.get(out, out.options.update(width=10_000), table).maximum
        Console(file=out.file, width=max(out.width, need), no_color=out.no_color, highlight=False).print(table)
    else:
        out.print(table)


def _print_weekly(results: list[Result], weeks: list[list[Week]], seen: dict[str, Observed | None], target_p95: float, *,
                  swept: str | None) -> None:  # fmt: skip
    """Per pool, two tables with a row a week and a column a result: executor-hours (the
    week's cheapest that met the target marked *) and p95 wait (✗ over the target; the
    observed waits beside them when the trace has them). The last row is the whole run's."""
    from datetime import UTC, datetime

    for pool in dict.fromkeys(r.pool for r in results):
        mine = [(r, ws) for r, ws in zip(results, weeks, strict=True) if r.pool == pool]
        heads = [r.policy + (f" {swept}={r.params.get(swept)}" if swept else "") for r, _ in mine]
        spine = mine[0][1]
        days = [datetime.fromtimestamp(w.start, UTC).strftime("%Y-%m-%d") for w in spine]
        where = f" ({pool})" if pool != "all" else ""
        cost, waits = Table(), Table()
        for table in (cost, waits):
            table.add_column("week from", no_wrap=True)
            table.add_column("jobs", justify="right", no_wrap=True)
            for head in heads:
                table.add_column(head, justify="right", no_wrap=True)
        observed = any(w.observed for w in spine)
        if observed:
            waits.add_column("observed p50", justify="right", no_wrap=True)
            waits.add_column("observed p95", justify="right", no_wrap=True)
        for k, day in enumerate(days):
            meeting = [ws[k].executor_hours for _, ws in mine if ws[k].wait_p95_s <= target_p95]
            best = min(meeting, default=None)
            cost.add_row(day, f"{spine[k].jobs:,}", *(f"{ws[k].executor_hours:,.0f}" + (" *" if ws[k].executor_hours == best else "")
                                                      for _, ws in mine))  # fmt: skip
            o = spine[k].observed
            waits.add_row(day, f"{spine[k].jobs:,}", *(_wait(ws[k].wait_p95_s, target_p95) for _, ws in mine),
                          *((f"{o.wait_p50_s:.0f}s", f"{o.wait_p95_s:.0f}s") if o else ("", "")) if observed else ())  # fmt: skip
        o = seen.get(pool)
        cost.add_section()
        cost.add_row("total", f"{mine[0][0].jobs:,}", *(f"{r.executor_hours:,.0f}" for r, _ in mine))
        waits.add_section()
        waits.add_row("all weeks", f"{mine[0][0].jobs:,}", *(_wait(r.wait_p95_s, target_p95) for r, _ in mine),
                      *((f"{o.wait_p50_s:.0f}s", f"{o.wait_p95_s:.0f}s") if o else ("", "")) if observed else ())  # fmt: skip
        out.print(f"executor-hours by week{where}; * the week's cheapest meeting p95 ≤ {target_p95:g}s", markup=False, highlight=False)
        _show(cost, wide=True)
        out.print(f"wait p95 by week{where}; ✗ over {target_p95:g}s", markup=False, highlight=False)
        _show(waits, wide=True)


def _wait(p95: float, target: float) -> Text:
    return Text(f"{p95:.0f}s {MISS}", style="red") if p95 > target else Text(f"{p95:.0f}s")

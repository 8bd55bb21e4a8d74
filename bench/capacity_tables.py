"""Markdown tables for docs/CAPACITY.md from `farm simulate --policy all --json` output.

Usage: farm simulate ... --policy all --json > run.json; python bench/capacity_tables.py run.json [...]
Each file becomes one table (its lead and target taken from the predictive row).

       python bench/capacity_tables.py --against PAST.json:HINDSIGHT.json [...]
One row a pair (the same setting, both --warm-weeks 1; --tune past and --tune hindsight): the
predictive policy beside the GitLab calendar the oracle draws and the one drawn from the weeks
before (gitlab-calendar), with the predictive policy's cost as a ratio of the oracle's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def setting(row: dict) -> str:
    params = dict(row["params"])
    periods = params.pop("periods", None)
    params.pop("max", None)  # every policy of the comparison runs uncapped (farm.sim.tune.UNCAPPED)
    # a knob re-chosen weekly (--tune past) is a value a week: "buffer 0→17→17…"
    text = ", ".join(f"{k} {'→'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in params.items())
    if periods:
        text += f", quiet hours off {len(periods[0]['hours_of_week'])}"
    return text


def table(rows: list[dict]) -> str:
    lead_s = rows[0]["lead_s"]
    target = rows[0]["params"]["target_p95_s"]
    clairvoyant = rows[0]["clairvoyant_hours"]
    out = [f"### Lead {lead_s:.0f} s, p95 target {target:.0f} s", "",
           "| policy | tuned setting | executor-h | × clairvoyant | efficiency | wait p50 | p95 | p99 | killed | reversals/h |",
           "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        miss = " ✗" if r["wait_p95_s"] > target else ""
        tuned = {"past": " (past weeks)", "hindsight": " (oracle)"}.get(r.get("tuning") or "", "")
        out.append(
            f"| {r['policy']}{tuned}{miss} | {setting(r)} | {r['executor_hours']:,.0f} | {r['executor_hours'] / clairvoyant:.2f} "
            f"| {r['efficiency']:.1%} | {r['wait_p50_s']:.0f} s | {r['wait_p95_s']:.0f} s | {r['wait_p99_s']:.0f} s "
            f"| {r['killed_jobs']} | {r['reversals_per_hour']:.2f} |"
        )
    out += ["", f"Clairvoyant lower bound: {clairvoyant:,.0f} executor-hours; busy: {rows[0]['busy_hours']:,.0f}.", ""]
    return "\n".join(out)


def figures(r: dict, target: float) -> str:
    return f"{r['executor_hours']:,.0f} h, p95 {r['wait_p95_s']:.0f} s{' ✗' if r['wait_p95_s'] > target else ''}"


def against(pairs: list[tuple[list[dict], list[dict]]]) -> str:
    out = ["| lead, target | predictive (warm) | GitLab calendar, oracle | predictive ÷ oracle calendar | "
           "GitLab calendar drawn from the weeks before |", "|---|---|---|---|---|"]  # fmt: skip
    for past, hindsight in pairs:
        mine = next(r for r in past if r["policy"] == "predictive")
        drawn = next(r for r in past if r["policy"] == "gitlab-calendar")
        oracle = next((r for r in hindsight if r["policy"] == "gitlab"), None)
        target = mine["params"]["target_p95_s"]
        ratio = "" if oracle is None else f"{mine['executor_hours'] / oracle['executor_hours']:.2f}"
        out.append(f"| {mine['lead_s']:.0f} s, {target:.0f} s | {figures(mine, target)} | "
                   f"{'none meets the target' if oracle is None else setting(oracle) + ': ' + figures(oracle, target)} | {ratio} | "
                   f"{figures(drawn, target)} |")  # fmt: skip
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    if sys.argv[1] == "--against":
        pairs = [tuple(json.loads(Path(f).read_text()) for f in arg.split(":")) for arg in sys.argv[2:]]
        print(against(pairs))  # type: ignore[arg-type]
        return
    for name in sys.argv[1:]:
        print(table(json.loads(Path(name).read_text())))


if __name__ == "__main__":
    main()

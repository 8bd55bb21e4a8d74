"""`farm simulate` as a platform engineer decides from it: week by week (`--weekly`), the
knob a past-tuned peer ran each week (`--wide`), a slice of the trace (`--since/--until`),
the waits the CI system observed beside the replay's, and a progress line per week tuned."""

import io
import json
import math
import re
from datetime import UTC, datetime

import pytest
from rich.console import Console
from typer.testing import CliRunner

from farm.cli import app
from farm.sim.trace import TraceError, instant, parse

NARROW = {"COLUMNS": "80", "LINES": "40"}
T0 = datetime(2025, 9, 1, 8, tzinfo=UTC).timestamp()
DAY = 86400


def write(tmp_path, days: int, *, observed: bool, name: str = "trace.csv"):
    """Three small bursts a day for `days` days, the CI system's own wait in the last column
    (4 or 5 s; blank for a burst's third job: one it did not record)."""
    rows = ["submitted_ts,duration_s,pool,tenant" + (",observed_queue_s" if observed else "")]
    for d in range(days):
        for h in (0, 2, 6):
            for j in range(1 + d % 3):
                rows.append(f"{T0 + d * DAY + h * 3600 + j:.0f},300,{'linux' if j % 2 else 'mac'},t"
                            + ((f",{'' if j == 2 else 4 + j}") if observed else ""))  # fmt: skip
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return path


def run(*args, env=NARROW):
    r = CliRunner().invoke(app, ["simulate", *map(str, args)], env=env)
    assert r.exit_code == 0, r.output
    return r


def test_weekly_figures_sum_to_the_totals(tmp_path):
    trace = write(tmp_path, 16, observed=True)  # three weeks, the last a short one
    rows = json.loads(run("--trace", trace, "--policy", "all", "--weekly", "--json").stdout)
    assert {row["policy"] for row in rows} == {"predictive", "reactive", "arc", "jenkins", "keda", "gitlab", "gitlab-calendar"}
    for row in rows:
        weeks = row["weeks"]
        assert len(weeks) == 3, row["policy"]
        assert sum(w["jobs"] for w in weeks) == row["jobs"]
        assert sum(w["executor_hours"] for w in weeks) == pytest.approx(row["executor_hours"], abs=0.005)
        assert sum(w["busy_hours"] for w in weeks) == pytest.approx(row["busy_hours"], abs=0.005)
        assert max(w["wait_p95_s"] for w in weeks) >= row["wait_p95_s"]  # no week can beat the whole run's p95 everywhere
        if row["tuning"] == "past":  # the knobs each week ran, as the row's params list them
            knobs = [k for k, v in row["params"].items() if isinstance(v, list)]
            assert knobs and all([w["knob"][k] for w in weeks] == row["params"][k] for k in knobs), row["policy"]
    # scored after a warm-up week: only the weeks after it, still summing to the totals
    (warm,) = json.loads(run("--trace", trace, "--policy", "reactive", "--set", "buffer=1", "--warm-weeks", "1", "--weekly",
                             "--json").stdout)  # fmt: skip
    assert len(warm["weeks"]) == 2 and sum(w["jobs"] for w in warm["weeks"]) == warm["jobs"]
    assert sum(w["executor_hours"] for w in warm["weeks"]) == pytest.approx(warm["executor_hours"], abs=0.005)


def test_weekly_tables_show_each_week_and_the_totals(tmp_path):
    trace = write(tmp_path, 9, observed=False)
    r = run("--trace", trace, "--policy", "arc", "--sweep", "min_runners=0:2:1", "--weekly")
    (row0, row1, row2) = json.loads(run("--trace", trace, "--policy", "arc", "--sweep", "min_runners=0:2:1", "--weekly",
                                        "--json").stdout)  # fmt: skip
    text = r.stdout
    assert "executor-hours by week; * the week's cheapest meeting p95 ≤ 15s" in text
    assert "arc min_runners=0" in text and "arc min_runners=2" in text
    weeks = [line for line in text.splitlines() if re.match(r"│ 2025-09-(01|08) ", line)]
    assert len(weeks) == 4  # two weeks, in each of the two tables
    total = next(line for line in text.splitlines() if line.startswith("│ total"))
    assert [int(x.replace(",", "")) for x in re.findall(r"[\d,]+", total)[1:]] == [
        round(row["executor_hours"]) for row in (row0, row1, row2)]  # fmt: skip
    assert "observed" not in text  # the trace has no observed_queue_s
    assert all(line.count("*") <= 1 for line in weeks)


def test_wide_shows_the_knob_a_past_tuned_peer_ran_each_week(tmp_path, monkeypatch):
    trace = write(tmp_path, 9, observed=False)
    r = run("--trace", trace, "--policy", "all", "--wide")
    rows = json.loads(run("--trace", trace, "--policy", "all", "--json").stdout)
    buffers = next(row for row in rows if row["policy"] == "reactive")["params"]["buffer"]
    assert f"buffer=[{', '.join(map(str, buffers))}]" in r.stdout
    # a long history: every week's value, not "[26 values]" (the narrow table still counts them)
    import farm.cli.simulate as cli
    from farm.sim.simulator import Result

    week_by_week = list(range(26))
    result = Result("reactive", {"buffer": week_by_week}, "all", 10, 1.0, 0.5, 0.5, 0, 0, 0, 0, 0, 0, tuning="past")
    for wide, shown in ((True, "buffer=[" + " ".join(map(str, week_by_week)) + "]"), (False, None)):
        screen = io.StringIO()
        monkeypatch.setattr(cli, "out", Console(file=screen, width=80, color_system=None))
        cli._print_table([result], 15, wide=wide, multi_pool=False, swept=None)
        assert (shown in screen.getvalue()) if shown else "buffer" not in screen.getvalue()


def test_a_line_per_week_tuned_in_a_pipe(tmp_path):
    trace = write(tmp_path, 16, observed=False)
    r = run("--trace", trace, "--policy", "all")
    for name, knob in (("reactive", "buffer"), ("arc", "min_runners"), ("gitlab", "idle_count")):
        weeks = [line for line in r.stderr.splitlines() if line.startswith(f"{name}: tuning week ")]
        assert [line.split()[3] for line in weeks] == ["2/3:", "3/3:"], r.stderr
        assert all(re.search(rf"{knob}=\d+ \(", line) for line in weeks), weeks


def test_since_and_until_cut_a_slice(tmp_path):
    trace = write(tmp_path, 16, observed=False)
    (whole,) = json.loads(run("--trace", trace, "--policy", "reactive", "--json").stdout)
    (cut,) = json.loads(run("--trace", trace, "--policy", "reactive", "--json", "--since", "2025-09-03",
                            "--until", "2025-09-05T08:00").stdout)  # fmt: skip
    with trace.open() as f:
        (tr,) = parse(f)
    lo, hi = instant("2025-09-03"), instant("2025-09-05T08:00")
    assert cut["jobs"] == sum(1 for t in tr.submitted if lo <= t < hi) < whole["jobs"]
    (zoned,) = json.loads(run("--trace", trace, "--policy", "reactive", "--json", "--until", "2025-09-05T10:00+02:00").stdout)
    assert zoned["jobs"] == sum(1 for t in tr.submitted if t < hi)  # 10:00 at UTC+2 is 08:00 UTC
    for args, said in ((["--since", "last week"], "--since takes an ISO 8601 date"), (["--until", "2025-13-01"], "--until takes"),
                       (["--since", "2025-09-05", "--until", "2025-09-05"], "--since (2025-09-05) must be before --until"),
                       (["--since", "2026-01-01"], "no jobs in the slice")):  # fmt: skip
        bad = CliRunner().invoke(app, ["simulate", "--trace", str(trace), *args], env=NARROW)
        assert bad.exit_code == 2 and said in bad.output, (args, bad.output)


def test_observed_waits_beside_the_simulated_ones_when_the_trace_has_them(tmp_path):
    seen = write(tmp_path, 9, observed=True, name="seen.csv")
    r = run("--trace", seen, "--policy", "reactive", "--set", "buffer=1", "--weekly")
    assert re.search(r"^observed by the CI system \(observed_queue_s, [\d,]+ jobs\): wait p50 \d+s, p95 \d+s$", r.stdout, re.M)
    assert "observed p50" in r.stdout and "observed p95" in r.stdout
    (row,) = json.loads(run("--trace", seen, "--policy", "reactive", "--set", "buffer=1", "--weekly", "--json").stdout)
    assert row["observed_wait_p95_s"] == 5 and row["observed_jobs"] < row["jobs"]  # blanks are not counted
    assert all("observed_wait_p50_s" in w for w in row["weeks"])
    plain = write(tmp_path, 9, observed=False, name="plain.csv")
    r = run("--trace", plain, "--policy", "reactive", "--set", "buffer=1", "--weekly")
    assert "observed" not in r.stdout
    (row,) = json.loads(run("--trace", plain, "--policy", "reactive", "--set", "buffer=1", "--weekly", "--json").stdout)
    assert not any(k.startswith("observed") for k in [*row, *row["weeks"][0]])


def test_trace_keeps_the_observed_column_and_a_slice():
    text = "submitted_ts,duration_s,pool,tenant,observed_queue_s\n30,5,a,t,\n20,5,b,t,7\n10,7,a,t,3\n"
    (one,) = parse(io.StringIO(text))
    assert one.observed[0] == 3 and one.observed[1] == 7 and math.isnan(one.observed[2])
    (cut,) = parse(io.StringIO(text), since=20, until=30)
    assert (cut.submitted, cut.observed) == ([20.0], [7.0])
    assert parse(io.StringIO("submitted_ts,duration_s,pool,tenant\n1,2,a,t\n"))[0].observed is None
    with pytest.raises(TraceError, match="line 2: observed_queue_s"):
        parse(io.StringIO("submitted_ts,duration_s,pool,tenant,observed_queue_s\n1,2,a,t,soon\n"))
    with pytest.raises(TraceError, match="no jobs in the slice"):
        parse(io.StringIO(text), since=100)
    with pytest.raises(ValueError):
        instant("next tuesday")


@pytest.mark.parametrize("value", ["soon", "-3", "inf", "nan"])
def test_an_observed_wait_that_is_no_number_of_seconds_names_its_line(value):
    from farm.sim.trace import TraceError, parse

    rows = ["submitted_ts,duration_s,pool,tenant,observed_queue_s", "1757000000,60,linux,t,4", f"1757000060,60,linux,t,{value}"]
    with pytest.raises(TraceError, match="line 3: observed_queue_s must be a number of seconds"):
        parse(rows)

from farm.cli import job_exit_code


def test_exit_code_of_a_job():
    """Documented in README: 0 ok, 1 failed, 124 timed out, 125 cancelled or expired (the
    step's own code is in the job: it would collide with 2 and 3, usage and unreachable)."""
    assert job_exit_code({"state": "succeeded", "exit_code": 0}) == 0
    assert job_exit_code({"state": "failed", "exit_code": 3}) == 1
    assert job_exit_code({"state": "failed", "exit_code": -9}) == 1
    assert job_exit_code({"state": "cancelled", "exit_code": None}) == 125
    assert job_exit_code({"state": "expired"}) == 125
    assert job_exit_code({"state": "timed_out"}) == 124


def _commands(group, path=()):
    import click

    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def test_a_short_option_means_one_thing_in_every_command():
    """`-f` is --follow wherever it is (as tail -f, kubectl logs -f); files are arguments. The
    old `-f FILE` of `policy set` and `-t FILE` of `policy seed` are hidden and only refuse."""
    import typer

    from farm.cli import app

    meanings: dict[str, set[str]] = {}
    for name, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            shorts = [o for o in param.opts + param.secondary_opts if len(o) == 2 and o.startswith("-")]
            longs = [o for o in param.opts if o.startswith("--")]
            if getattr(param, "hidden", False):
                assert not longs, (name, param.opts)  # a refusal only, not a second meaning
                continue
            for short in shorts:
                meanings.setdefault(short, set()).update(longs or [f"{name}: no long name"])
    assert {s: m for s, m in meanings.items() if len(m) > 1} == {}
    assert meanings["-f"] == {"--follow"} and meanings["-t"] == {"--timestamps"}


def test_the_old_short_options_point_to_the_new_way(tmp_path):
    from typer.testing import CliRunner

    from farm.cli import app

    wide = {"COLUMNS": "200"}
    r = CliRunner().invoke(app, ["policy", "set", "default", "-f", str(tmp_path / "p.yaml")], env=wide)
    assert r.exit_code == 2 and "-f is --follow in every farm command now; give the file as an argument: farm policy set POOL FILE" \
        in r.output, r.output
    r = CliRunner().invoke(app, ["policy", "seed", "default", "-t", str(tmp_path / "t.csv")], env=wide)
    assert r.exit_code == 2 and "-t is --timestamps in every farm command now; use --trace FILE" in r.output, r.output

"""The alerting rules' behaviour, as Prometheus evaluates them: `promtool test rules` runs the
cases in farm.rules.test.yml (beside this file) against alerts/farm.rules.yml."""

import subprocess
from pathlib import Path

from tests.conftest import require_tool

CASES = Path(__file__).with_name("farm.rules.test.yml")


def test_the_alerting_rules_do_what_their_cases_say():
    run = subprocess.run([require_tool("promtool", "prometheus"), "test", "rules", str(CASES)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr

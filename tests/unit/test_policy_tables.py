"""README.md's tables of the capacity policies' fields are the models' own: every field of
every live kind, with its default, bounds and description (tests/unit/policy_tables.py)."""

import re

from farm.autoscale.policy import LIVE_KINDS, LIVE_MAX, NO_CAP, ArcPolicy, PredictivePolicy, ReactivePolicy, ScheduledPolicy
from tests.unit import policy_tables


def test_the_readme_tables_are_generated_from_the_models():
    text = policy_tables.README.read_text()
    assert policy_tables.current(text) == policy_tables.render(), (
        "README.md's policy tables are stale: run `python -m tests.unit.policy_tables --write`")


def test_every_field_of_every_live_kind_is_in_the_readme_with_its_default():
    """Read back from the README's rows, independently of how they are made."""
    block = policy_tables.current(policy_tables.README.read_text())
    policies, _, windows = block.partition("\nEach of `windows`:\n")
    sections = re.split(r"\n`kind: (\w+)` adds:\n", policies)
    rows = r"^\| `(\w+)` \| ([^|]+) \|"
    common = dict(re.findall(rows, sections[0], re.M))
    by_kind = {kind: dict(re.findall(rows, part, re.M)) for kind, part in zip(sections[1::2], sections[2::2], strict=True)}
    assert set(by_kind) == set(LIVE_KINDS)
    for model in (ReactivePolicy, ScheduledPolicy, PredictivePolicy):
        kind = model.model_fields["kind"].default
        shown = {**common, **by_kind[kind]}
        assert set(shown) == set(model.model_fields) - {"kind"}, kind
        for name, value in model().model_dump(mode="json").items():
            if name in ("kind", "windows"):
                continue
            cell = shown[name].strip().strip("`")
            expected = "none" if value is None else str(value).lower() if isinstance(value, bool) else f"{value:,}" \
                if isinstance(value, int) else f"{value:g}"
            assert cell == expected, (kind, name, cell, value)
    assert re.findall(r"^\| `(\w+)` \|", windows, re.M) == ["cron", "duration_s", "timezone", "idle", "min"]


def test_a_live_policy_is_capped_unless_it_says_otherwise_and_the_readme_says_why():
    assert ReactivePolicy().max == ScheduledPolicy().max == PredictivePolicy().max == LIVE_MAX == 50
    assert ArcPolicy().max == NO_CAP  # a peer models a system that sets no cap by default
    assert PredictivePolicy(max=500).max == 500
    text = " ".join(policy_tables.README.read_text().split())
    assert f"`max` is {LIVE_MAX} unless you set it." in text
    assert "| `executors.pool` | `default` |" in text

"""A field a schema does not have is named with the one it was probably meant to be, for
policies (their kind's own fields), job specs and farm.yaml alike."""

import pytest

from farm.autoscale.policy import LivePolicy
from farm.fieldnames import known, suggest, unknown_field
from farm.models import JobSpec
from farm.settings import Settings


@pytest.mark.parametrize("tp, loc, close", [
    (LivePolicy, ["predictive", "target_p95"], "target_p95_s"),
    (LivePolicy, ["predictive", "saftey"], "safety"),
    (LivePolicy, ["reactive", "bufer"], "buffer"),
    (LivePolicy, ["reactive", "target_p95_s"], None),  # a predictive field, not one of reactive's
    (LivePolicy, ["scheduled", "windows", 0, "duration"], "duration_s"),
    (LivePolicy, ["scheduled", "windows", 0, "timezon"], "timezone"),
    (LivePolicy, ["reactive", "colour"], None),
    (JobSpec, ["steps", 0, "rnu"], "run"),
    (JobSpec, ["timout_s"], "timeout_s"),
    (Settings, ["policies", "gpu", "predictive", "target_p95"], "target_p95_s"),
    (Settings, ["nowhere", "at", "all"], None),
])  # fmt: skip
def test_the_close_field_is_suggested(tp, loc, close):
    assert suggest(tp, loc) == close
    assert unknown_field(tp, loc) == ("unknown field" + (f" (did you mean {close}?)" if close else ""))


def test_known_fields_follow_the_discriminator():
    assert "target_p95_s" in known(LivePolicy, ["predictive"]) and "buffer" not in known(LivePolicy, ["predictive"])
    assert set(known(LivePolicy, [])) >= {"buffer", "windows", "target_p95_s"}  # no tag: any kind's
    assert known(LivePolicy, ["predictive", "min"]) == []  # a number has no fields

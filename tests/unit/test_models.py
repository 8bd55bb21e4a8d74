import itertools

import pytest
from pydantic import ValidationError

from farm.errors import IllegalTransition
from farm.models import TERMINAL, TRANSITIONS, JobSpec, JobState, check_transition, parse_rfc3339, rfc3339


def test_every_state_has_a_row_and_terminal_states_have_no_way_out():
    assert set(TRANSITIONS) == set(JobState)
    for state in JobState:
        assert state.terminal == (state in TERMINAL)
        if state.terminal:
            assert TRANSITIONS[state] == frozenset()


@pytest.mark.parametrize("src,dst", list(itertools.product(JobState, JobState)))
def test_check_transition_follows_the_table(src, dst):
    if dst in TRANSITIONS[src]:
        check_transition(src, dst)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(src, dst)


def test_retry_edge_is_running_to_queued():
    assert JobState.QUEUED in TRANSITIONS[JobState.RUNNING]
    assert JobState.QUEUED not in TRANSITIONS[JobState.QUEUED]


def test_spec_defaults():
    spec = JobSpec(steps=[{"name": "a", "run": "true"}])
    assert (spec.kind, spec.pool, spec.retries, spec.priority, spec.network) == ("build", "default", 2, 50, "none")


@pytest.mark.parametrize(
    "body,path",
    [
        ({"steps": [{"name": "a", "run": "true"}], "colour": "red"}, ("colour",)),
        ({"steps": [{"name": "a", "run": "true", "shell": "bash"}]}, ("steps", 0, "shell")),
        ({"steps": []}, ("steps",)),
        ({"steps": [{"name": "a", "run": "true"}], "kind": "image"}, ("build",)),
        ({"kind": "build"}, ("steps",)),
        ({"steps": [{"name": "a", "run": "true"}], "build": {"tags": ["a/b:1"]}}, ("build",)),
        ({"kind": "image", "build": {"tags": ["a/b:1"], "context": "../up"}}, ("build", "context")),
        ({"kind": "image", "build": {"tags": ["Bad Tag"]}}, ("build", "tags", 0)),
        ({"steps": [{"name": "a", "run": "true"}], "priority": 101}, ("priority",)),
        ({"steps": [{"name": "a", "run": "true"}], "timeout_s": 0}, ("timeout_s",)),
        ({"steps": [{"name": "a", "run": "true"}], "env": {"1BAD": "x"}}, ("env",)),
        ({"steps": [{"name": "a", "run": "true"}], "env": {"FARM_JOB_ID": "x"}}, ("env",)),
        ({"steps": [{"name": "a", "run": "true"}], "source": {"git": {"url": "u", "ref": "--upload-pack=x"}}}, ("source", "git", "ref")),
        ({"steps": [{"name": "a", "run": "true"}], "pool": "../x"}, ("pool",)),
    ],
)
def test_bad_specs_are_refused_with_the_field_path(body, path):
    with pytest.raises(ValidationError) as e:
        JobSpec.model_validate(body)
    assert path in [tuple(err["loc"]) for err in e.value.errors()]


def test_rfc3339_round_trip():
    s = rfc3339(1795673340247)
    assert s == "2026-11-26T06:09:00.247Z"
    assert int(parse_rfc3339(s).timestamp() * 1000) == 1795673340247
    assert rfc3339(None) is None


def test_a_job_leaves_farm_with_its_literal_secrets_redacted():
    """The store keeps the spec as submitted; whatever serialises a Job (an API answer, a
    webhook body, --json) shows literal secret values as *** and references as they are."""
    from farm.models import Job

    spec = JobSpec.model_validate({"steps": [{"name": "s", "run": "true"}], "secrets": {"A": "lit-value-1234", "B": {"ref": "vault"}}})
    job = Job(id="j", tenant="t", state="queued", attempt=1, spec=spec, queued_at="2026-11-30T00:00:00.000Z")
    for shown in (job.model_dump_json(), str(job.model_dump()), str(job.model_dump(mode="json"))):
        assert "lit-value-1234" not in shown and "***" in shown and "vault" in shown
    assert job.spec.secrets["A"] == "lit-value-1234"  # kept inside: a rerun needs it

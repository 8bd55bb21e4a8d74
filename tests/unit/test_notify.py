"""Notifications, pure: which ends set off which triggers, which subscriptions hear of them,
what a subscription may say, and what the messages read."""

import json

import pytest
from pydantic import ValidationError

from farm.notify import (
    Event,
    Subscription,
    SubscriptionSpec,
    Trigger,
    chat_body,
    mail_body,
    matches,
    retry_delay,
    subject,
    subscribers,
    triggered,
    webhook_body,
    what,
)


def sub(on, *, branch=None, tenant="team", sub_id="a1b2c3d4e5f6", **channel) -> Subscription:
    channel = channel or {"email": ["team@example.com"]}
    return Subscription(on=on, branch=branch, **channel, id=sub_id, tenant=tenant, created_at="2030-01-01T00:00:00.000Z",
                        created_by="test")  # fmt: skip


def end(state, prev="", *, kind="job", branch="main", name=None, tenant="team", **kw) -> Event:
    return Event(kind, "0123456789abcdef0123456789abcdef", tenant, state, prev, branch, name, **kw)


@pytest.mark.parametrize(
    ("state", "prev", "expected"),
    [
        ("failed", "", {"failed", "always"}),
        ("timed_out", "ok", {"failed", "always"}),
        ("expired", "failed", {"failed", "always"}),
        ("succeeded", "failed", {"fixed", "always"}),  # a failure, then a success of the same thing
        ("succeeded", "ok", {"always"}),
        ("succeeded", "", {"always"}),  # nothing known before: not a fix
        ("cancelled", "failed", {"always"}),  # a cancel neither breaks nor fixes
    ],
)
def test_each_end_sets_off_its_triggers(state, prev, expected):
    assert {t.value for t in triggered(end(state, prev))} == expected


def test_a_subscription_hears_its_triggers_on_its_branch_only():
    fixed_main = sub(["fixed"], branch="main")
    assert matches(fixed_main, end("succeeded", "failed"))
    assert not matches(fixed_main, end("succeeded", "failed", branch="dev"))
    assert not matches(fixed_main, end("succeeded", "failed", branch=None))
    assert not matches(fixed_main, end("failed", "ok"))
    assert matches(sub(["always"]), end("cancelled", branch=None))


def test_one_delivery_per_subscription_and_none_for_another_tenant():
    both = sub(["failed", "fixed", "always"], sub_id="000000000001")
    other = sub(["always"], tenant="other", sub_id="000000000002")
    fixed_only = sub(["fixed"], sub_id="000000000003")
    assert subscribers([both, other, fixed_only], end("failed")) == [both]
    assert subscribers([both, other, fixed_only], end("succeeded", "failed")) == [both, fixed_only]


def test_a_subscription_names_exactly_one_channel_and_good_addresses():
    ok = SubscriptionSpec(on=["fixed", "fixed", "failed"], email=["a@example.com", "b.c+ci@mail.example.org"])
    assert ok.on == [Trigger.FIXED, Trigger.FAILED] and ok.channel == "email"
    assert SubscriptionSpec(on=["always"], chat="https://chat.example.com/hooks/x").channel == "chat"
    bad = [
        {"on": ["fixed"]},  # no channel
        {"on": ["fixed"], "chat": "https://c.example.com/h", "email": ["a@example.com"]},  # two
        {"on": [], "email": ["a@example.com"]},
        {"on": ["sometimes"], "email": ["a@example.com"]},
        {"on": ["fixed"], "email": []},
        {"on": ["fixed"], "email": ["a@example.com", "A@example.com"]},
        {"on": ["fixed"], "email": ["a b@example.com"]},
        {"on": ["fixed"], "email": ["a@localhost"]},
        {"on": ["fixed"], "email": ["a@example.com\r\nBcc: x@example.com"]},
        {"on": ["fixed"], "email": ["a@example.com,b@example.com"]},
        {"on": ["fixed"], "email": [f"a{i}@example.com" for i in range(21)]},
        {"on": ["fixed"], "chat": "ftp://chat.example.com/x"},
        {"on": ["fixed"], "webhook": "https://h.example.com/\x00"},
        {"on": ["fixed"], "email": ["a@example.com"], "branch": "main\x1b[31m"},
        {"on": ["fixed"], "email": ["a@example.com"], "channel": "email"},  # unknown field
    ]
    for body in bad:
        with pytest.raises(ValidationError):
            SubscriptionSpec.model_validate(body)


def test_messages_say_what_happened_and_where_to_look():
    fixed_run = end("succeeded", "failed", kind="run", name="ci-main")
    assert what(fixed_run) == "fixed"
    assert subject(fixed_run) == "[farm] run ci-main on main is fixed"
    assert subject(end("failed", name="lint")) == "[farm] job lint (0123456789ab) on main failed"
    body = mail_body(end("failed", kind="run", name="ci", failed_jobs=("test (failed, step_failed)",)), None)
    assert "test (failed, step_failed)" in body and "farm run get 0123456789abcdef0123456789abcdef" in body
    assert "https://farm.example.com/ui/jobs/0123456789abcdef0123456789abcdef" in mail_body(
        end("failed"), "https://farm.example.com/"
    )
    sent = json.loads(webhook_body(fixed_run, "a1b2c3d4e5f6"))
    assert (sent["event"], sent["subscription"], sent["prev"], sent["name"]) == ("run.fixed", "a1b2c3d4e5f6", "failed", "ci-main")


def test_chat_text_cannot_mention_or_link():
    text = chat_body(end("failed", branch="@channel <!here|x> `y`", name="n", error="step_failed"), None)["text"]
    assert "<" not in text and ">" not in text
    assert "`@channel ‹!here|x› 'y'`" in text  # in a code span: no mention, no link, no way out of it
    assert set(chat_body(end("failed"), None)) == {"text"}


def test_retries_back_off_doubling_up_to_the_cap():
    assert [retry_delay(n, 2.0, 30.0) for n in (1, 2, 3, 4, 5, 99)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_an_event_keeps_as_json():
    e = end("failed", kind="run", name="ci", failed_jobs=("a (failed)",), error=None, finished_at="2030-01-01T00:00:00.000Z")
    assert Event.from_json(e.to_json()) == e

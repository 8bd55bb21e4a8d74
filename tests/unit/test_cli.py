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

from farm.cli import job_exit_code


def test_exit_code_of_a_job():
    assert job_exit_code({"state": "succeeded", "exit_code": 0}) == 0
    assert job_exit_code({"state": "failed", "exit_code": 3}) == 3
    assert job_exit_code({"state": "failed", "exit_code": -9}) == 1
    assert job_exit_code({"state": "cancelled", "exit_code": None}) == 1
    assert job_exit_code({"state": "timed_out"}) == 1

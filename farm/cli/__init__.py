"""The `farm` command: run the farm (`up`, `api`, `autoscaler`) and talk to it (jobs, logs,
artifacts, pools and policies, caches, contexts), and try capacity policies (`simulate`).

One module per area; errors and exit codes are rendered in one place (`farm.cli.output`).

    __main__     `python -m farm.cli`
    output       what the CLI prints, and the one place errors become words and exit codes
    serve        running farm: `up`, `api`, `autoscaler`
    jobs         jobs: submit, follow, list, inspect, rerun, cancel, logs, artifacts
    runs         runs: `farm run submit/get/ls/cancel`
    pools        pools: the queue, executors, capacity policies, the policy's changes, decisions
    caches       your tenant's dependency cache entries
    accounts     `farm whoami`, `farm tenant` and `farm token`: tenants, tokens and roles
    audit        `farm audit`: the audit trail as a table, or JSON lines for a SIEM
    notify       `farm notify add/ls/rm/dead-letters`: notifications of jobs' and runs' ends
    contexts     which farm the CLI talks to: `farm login`, `farm context`
    simulate     `farm simulate`: replay a trace through capacity policies
    root         the `farm` command itself, which each of the above adds its commands to
"""

from __future__ import annotations

from farm.cli import accounts, audit, caches, contexts, jobs, notify, pools, runs, serve, simulate  # noqa: F401 - each adds its commands
from farm.cli.output import job_exit_code
from farm.cli.root import app

__all__ = ["app", "job_exit_code"]

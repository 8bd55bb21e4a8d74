"""How long `farm simulate` takes to replay a trace through each policy (the capacity issue
asks for 42 days of the shared trace in <= 10 s per policy on 2 cores).

Usage: python bench/simulate.py [--json] [--trace FILE] [--lead 60]
The default trace is ../shared/traces/bitcoin-core-ci-2025.csv beside the repository.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import report  # noqa: E402

from farm.sim.trace import parse  # noqa: E402
from farm.sim.tune import POLICIES, UNCAPPED, run  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "traces" / "bitcoin-core-ci-2025.csv"
# farm's kinds uncapped, as the peers are (their figures in docs/ were measured so)
PARAMS = {"reactive": {"buffer": 17, **UNCAPPED}, "arc": {"min_runners": 18}, "jenkins": {"spare": 17}, "keda": {"min_replicas": 18},
          "gitlab": {"idle_count": 18}, "predictive": {"target_p95_s": 15, **UNCAPPED}, "scheduled": {"idle": 17, **UNCAPPED}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--trace", type=Path, default=DEFAULT)
    ap.add_argument("--lead", type=float, default=60.0)
    args = ap.parse_args()
    with args.trace.open() as f:
        (trace,) = parse(f)
    days = (trace.submitted[-1] - trace.submitted[0]) / 86400
    figures: dict[str, float | int] = {"jobs": len(trace), "trace_days": round(days, 1)}
    for name in POLICIES:
        t0 = time.perf_counter()
        run(trace, name, PARAMS[name], args.lead)
        figures[f"{name}_replay_s"] = round(time.perf_counter() - t0, 2)
    report(figures, args.json)


if __name__ == "__main__":
    main()

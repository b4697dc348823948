"""One worker instance of the Exchange benchmark, in a process of its own: the Functions host's part for the queue
trigger (sim.host.LocalHost over `function_app`), with the app settings and trust the benchmark passes in the
environment. Drains the ops queue until it is empty (deferred ops included), then prints its report as JSON.

    python benchmarks/exchange_worker.py HOST_JSON DEADLINE_SECONDS
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from sim.host import LocalHost


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # ten thousand ops: their per-op warnings (deferrals) stay out
    host_json, deadline = Path(sys.argv[1]), float(sys.argv[2])
    host = LocalHost(host_json=host_json)
    report = host.drain_queue(deadline_seconds=deadline)
    print(json.dumps(report.as_dict()), flush=True)


if __name__ == "__main__":
    main()

"""How long `orchestrator --help` takes, against a bare `python -c pass` measured in the same run.

Usage: python bench/cli_startup.py [--runs N]
Prints the median wall time of each, the ratio, and the heavy modules `import orchestrator.cli` loads.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "llamafactory", "numpy", "gguf", "requests", "rich", "pydantic")


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    bare = median_seconds([sys.executable, "-c", "pass"], args.runs)
    helped = median_seconds([sys.executable, "-m", "orchestrator", "--help"], args.runs)
    probe = "import sys, orchestrator.cli as c; c.build_parser(); print(' '.join(m for m in %r if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe % (HEAVY,)], capture_output=True, text=True, check=True)
    print(f"python -c pass          {bare * 1000:7.1f} ms (reference)")
    print(f"orchestrator --help     {helped * 1000:7.1f} ms  ({helped / bare:.2f}x the bare interpreter)")
    print(f"target                  {'met' if helped < 0.5 else 'MISSED'}: under 500 ms")
    print(f"heavy modules loaded    {loaded.stdout.strip() or 'none'}")


if __name__ == "__main__":
    main()

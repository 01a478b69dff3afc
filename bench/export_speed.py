"""Dataset export speed and memory: the orchestrator's export (redaction off, on, and the recipe's
defaults: redaction on and near duplicates at 0.9) against a naive standard-library loop that only
reads the JSONL, maps roles and writes ShareGPT, on the same synthetic file, each in a fresh process
(imports, the tokenizer's load and the token figures included), measured in this run.

Usage: python bench/export_speed.py [--messages N]   (default 1,000,000 messages)
Prints seconds, messages per second and peak RSS of each, and the ratio to the naive loop.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

NAIVE = textwrap.dedent(
    """
    import json, sys
    roles = {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation"}
    with open(sys.argv[1], encoding="utf-8") as src, open(sys.argv[2], "w", encoding="utf-8") as out:
        for line in src:
            record = json.loads(line)
            turns = [{"from": roles[m["role"]], "value": m["content"]} for m in record["messages"]]
            out.write(json.dumps({"conversations": turns}, ensure_ascii=False) + "\\n")
    """
)
OURS = textwrap.dedent(
    """
    import sys
    from orchestrator.dataset import export_dataset
    from orchestrator.sources.files import read_file
    redact, near = sys.argv[3] == "on", None if sys.argv[4] == "off" else float(sys.argv[4])
    export_dataset(read_file(sys.argv[1]), "bench", sys.argv[2], redact=redact, near_duplicates=near)
    """
)
MEASURE = textwrap.dedent(
    """
    import resource, runpy, sys, time
    start = time.perf_counter()
    sys.argv = sys.argv[1:]
    exec(compile(open(sys.argv[0]).read(), sys.argv[0], "exec"), {"__name__": "__main__"})
    print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)

WORDS = "the model answers with a short list of steps and a code sample when asked about files".split()


def synthetic(path: Path, messages: int) -> None:
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as out:
        for i in range(messages // 4):
            turns = []
            for role in ("user", "assistant", "user", "assistant"):
                text = " ".join(rng.choices(WORDS, k=rng.randint(8, 60)))
                turns.append({"role": role, "content": f"{text} #{i}"})
            out.write(json.dumps({"messages": turns}) + "\n")


def run(work: Path, script: str, *args: str) -> tuple[float, float]:
    code = work / f"script-{abs(hash(script))}.py"
    code.write_text(script)
    driver = work / "measure.py"
    driver.write_text(MEASURE)
    done = subprocess.run([sys.executable, str(driver), str(code), *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-2000:])
    seconds, rss_kib = done.stdout.split()[-2:]
    return float(seconds), int(rss_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "chats.jsonl"
        synthetic(source, args.messages)
        naive = run(work, NAIVE, str(source), str(work / "naive.jsonl"))
        off = run(work, OURS, str(source), str(work / "off"), "off", "off")
        on = run(work, OURS, str(source), str(work / "on"), "on", "off")
        defaults = run(work, OURS, str(source), str(work / "defaults"), "on", "0.9")
    n = args.messages
    print(f"{n:,} messages ({n // 4:,} conversations)")
    print(f"naive stdlib loop          {naive[0]:7.2f} s  {n / naive[0]:>9,.0f} msg/s  {naive[1]:6.0f} MiB (reference)")
    runs = (("redact off", off), ("redact on", on), ("redact on, near dups 0.9", defaults))
    for label, (seconds, rss) in runs:
        print(f"{label:<26} {seconds:7.2f} s  {n / seconds:>9,.0f} msg/s  {rss:6.0f} MiB ({seconds / naive[0]:.2f}x)")


if __name__ == "__main__":
    main()

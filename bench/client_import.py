"""What importing the client kit costs, against importing httpx2 alone, measured in the same run.

    python bench/client_import.py [--rounds N]

Each round starts fresh interpreters (interleaved, so machine noise hits all three alike) and
reads ``-X importtime``'s cumulative microseconds for the top-level import. Prints medians
and the ratios. The test suite pins *what* the kit imports (tests/client/test_kit_units.py);
this measures how long it takes.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys

CASES = {
    "httpx2": "httpx2",
    "omen_local.client": "omen_local.client",
    "openai (for scale)": "openai",
}


def cumulative_us(module: str) -> int:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                         capture_output=True, text=True, check=True).stderr
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$", line)
        if m and m.group(2) == module:
            return int(m.group(1))
    raise RuntimeError(f"no importtime line for {module}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    samples: dict[str, list[int]] = {name: [] for name in CASES}
    for _ in range(args.rounds):
        for name, module in CASES.items():
            samples[name].append(cumulative_us(module))
    base = statistics.median(samples["httpx2"])
    print(f"{'import':24} {'median ms':>10} {'x httpx2':>9}")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"{name:24} {med / 1000:10.1f} {med / base:9.2f}")


if __name__ == "__main__":
    main()

"""Summarise py-spy ``-f raw`` (collapsed stacks): top functions by own and by total samples.

python bench/collapse_summary.py /tmp/prof/scheduler-sqlite.txt [--top 25] [--grep scheduler]
"""

from __future__ import annotations

import sys
from collections import Counter


def main() -> None:
    path = sys.argv[1]
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 25
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    with open(path) as fh:
        lines = fh.readlines()
    for line in lines:
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack:
            continue
        count = int(n)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for f in set(frames):
            total[f] += count
    print(f"{samples} samples")
    print("-- own --")
    for f, c in own.most_common(top):
        print(f"{100 * c / samples:5.1f}%  {f}")
    print("-- total --")
    for f, c in total.most_common(top):
        print(f"{100 * c / samples:5.1f}%  {f}")


if __name__ == "__main__":
    main()

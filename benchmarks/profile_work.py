"""Where one contender's time goes: ``contender.py``'s run under cProfile, the functions that
take the most time (own time, and cumulative) printed. Inputs from a ``side_by_side.py`` run:

    python benchmarks/profile_work.py bench_results/side_by_side/inputs dpo ours --top 30
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contender import WORKS, measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", help="the inputs folder side_by_side.py made (<out>/inputs)")
    parser.add_argument("work", choices=sorted(WORKS))
    parser.add_argument("who", choices=("ours", "trl", "bare"))
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        report = profiler.runcall(measure, args.inputs, args.work, args.who, f"{tmp}/out.json")
    print(f"timed part {report['seconds']:.2f}s, {report['units'] / report['seconds']:.2f} "
          f"{report['unit']}/s, outside {report['outside_seconds']:.2f}s")  # fmt: skip
    for key in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(args.top)
        print(f"--- by {key}\n" + text.getvalue().split("\n", 6)[-1])


if __name__ == "__main__":
    main()

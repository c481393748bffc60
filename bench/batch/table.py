"""The table of bench/run-batch.sh from its times.tsv: per engine the
median events/s over the rounds (with the spread), CPU-seconds per 1M
events and peak RSS, then one ratio line per peer against `tally run FILE`.

    table.py TIMES.tsv CLICKS
"""

import statistics
import sys

TALLY = "tally run FILE"
PEERS = (("duckdb", "duckdb"), ("chdb", "chdb"))


def main(path, clicks):
    runs = {}
    with open(path) as lines:
        for line in lines:
            engine, _, wall, user, sys_s, rss = line.rstrip("\n").split("\t")
            runs.setdefault(engine, []).append((float(wall), float(user) + float(sys_s), int(rss)))
    print(f"batch: {clicks:,} clicks from NDJSON and a catalog CSV, 2 threads, reading and writing included")
    print(f"{'engine':<28}{'events/s':>14}{'spread':>22}{'CPU-s per 1M':>15}{'peak RSS MB':>14}")
    rates = {}
    for engine, samples in runs.items():
        per_s = [clicks / max(wall, 1e-3) for wall, _, _ in samples]
        rates[engine] = statistics.median(per_s)
        cpu = statistics.median(cpu for _, cpu, _ in samples) / (clicks / 1e6)
        rss = max(rss for _, _, rss in samples) / 1024
        spread = f"{min(per_s):,.0f}..{max(per_s):,.0f}"
        print(f"{engine:<28}{rates[engine]:>14,.0f}{spread:>22}{cpu:>15.2f}{rss:>14.0f}")
    for name, engine in PEERS:
        ratio = rates[TALLY] / rates[engine] if TALLY in rates and engine in rates else None
        print(f"ratio batch tally/{name}: {'n/a' if ratio is None else f'{ratio:.2f}'}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], int(sys.argv[2]))

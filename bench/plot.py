"""Draws the figures of bench/compare.rs (its --json output) as one PNG.

Left: events/s per comparison, tally beside every peer that ran the same
work (the Flink DataStream and SQL jobs, DuckDB and chDB), median bars
with min-max whiskers, and tally's lead over the strongest peer. Right:
end-to-end latency: freshness (a click's 202 until the query API counts
it) and, when the runs were long enough, window end until the final row
is visible.

    python3 bench/plot.py results.json results.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

TALLY = "#1f77b4"
# Each peer's colour, by the start of its engine name in the figures.
PEERS = (
    ("tally run --bounded", "#6baed6", "tally run --bounded"),
    ("tally", TALLY, "tally"),
    ("Flink", None, None),  # by the job's label below
    ("DuckDB", "#fdd835", "DuckDB"),
    ("chDB", "#31a354", "chDB (ClickHouse)"),
)
FLINK_JOBS = (
    ("DataStream, dedup in the source split", "#a63603", "Flink DataStream (dedup in split)"),
    ("DataStream, keyed dedup", "#e6550d", "Flink DataStream (keyed dedup)"),
    ("SQL", "#fdae6b", "Flink SQL, straightforward"),
)
LABELS = {
    "core": "core\n(no checkpoints)",
    "checkpointed": "checkpointed\n(exactly-once)",
    "batch": "batch\n(NDJSON file)",
    "e2e": "end to end\n(HTTP → store)",
}


def human(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.0f}k"
    return f"{v:.0f}"


def style(engine):
    """Colour and legend label of an engine."""
    if engine.startswith("Flink"):
        for job, colour, label in FLINK_JOBS:
            if job in engine:
                return colour, label
        return "#e6550d", "Flink"
    for start, colour, label in PEERS:
        if colour and engine.startswith(start):
            return colour, label
    return TALLY, "tally"


def lead(doc, comparison):
    """tally's lead over the strongest peer of a comparison: (peer, ratio)."""
    ratios = [(key.split("tally/", 1)[1], r) for key, r in doc.get("ratios", {}).items()
              if key.startswith(comparison + " ") and r and key.split("tally/", 1)[1] != "flink"]
    return min(ratios, key=lambda pr: pr[1]) if ratios else None


def throughput(ax, doc):
    rows = doc["rows"]
    comparisons = [c for c in ("core", "checkpointed", "batch", "e2e") if any(r["comparison"] == c for r in rows)]
    # The end-to-end capacity; the paced run's throughput is its pace.
    rows = [r for r in rows if r["comparison"] != "e2e" or r["engine"] == "tally up"]
    seen = {}
    for i, comparison in enumerate(comparisons):
        group = [r for r in rows if r["comparison"] == comparison]
        width = 0.8 / len(group)
        for j, r in enumerate(group):
            x = i - 0.4 + width * (j + 0.5)
            colour, label = style(r["engine"])
            s = r["events_per_s"]
            ax.bar(x, s["median"], width * 0.95, color=colour,
                   yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]], capsize=3,
                   label=None if label in seen else label)
            seen[label] = True
            ax.text(x, s["max"] * 1.15, human(s["median"]), ha="center", fontsize=6, rotation=90)
        best = lead(doc, comparison)
        if best:
            top = max(r["events_per_s"]["max"] for r in group)
            ax.text(i, top * 4.0, f"tally/{best[0]}\n{best[1]:.2f}×", ha="center", fontsize=8, fontweight="bold")
    ax.set_yscale("log")
    ax.set_ylim(1e4, max(r["events_per_s"]["max"] for r in rows) * 20)
    ax.set_xticks(range(len(comparisons)), [LABELS[c] for c in comparisons])
    ax.set_ylabel("events/s (log scale), median of runs, min–max")
    ax.set_title("throughput, same work and machine; bold: tally's lead over the strongest peer", fontsize=9)
    ax.legend(loc="upper right", fontsize=7, ncol=2)


def latency(ax, doc):
    bars = []
    for r in (r for r in doc["rows"] if r["comparison"] == "e2e" and r.get("freshness_ms")):
        load = "at capacity" if r["engine"] == "tally up" else r["engine"].replace("tally up ", "")
        bars.append((f"freshness {load}\n202 → counted", r["freshness_ms"]))
    if doc.get("final_row_ms"):
        bars.append(("window end →\nfinal row", doc["final_row_ms"]))
    if not bars:
        ax.text(0.5, 0.5, "no end-to-end run", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    for i, (label, q) in enumerate(bars):
        for j, (name, shade) in enumerate((("p50", 1.0), ("p99", 0.55))):
            x = i + (j - 0.5) * 0.38
            ax.bar(x, q[name] / 1e3, 0.38, color=TALLY, alpha=shade, label=name if i == 0 else None)
            ax.text(x, q[name] / 1e3, f"{q[name] / 1e3:.1f} s", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars])
    ax.set_ylabel("seconds")
    ax.set_title("tally up: latency")
    ax.legend()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py FIGURES.json OUT.png")
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [2.6, 1]})
    throughput(left, doc)
    latency(right, doc)
    fig.suptitle(f"tally and its peers — {doc['machine']}, {doc['runs']} run(s) per row\n{doc['versions']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()

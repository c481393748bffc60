"""Draws the figures of bench/compare.rs (its --json output) as one PNG.

Left: events/s per comparison, tally beside Flink, median bars with
min-max whiskers and the tally/Flink ratio. Right: end-to-end latency:
freshness (a click's 202 until the query API counts it) and, when the
runs were long enough, window end until the final row is visible.

    python3 bench/plot.py results.json results.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

TALLY = "#1f77b4"
FLINK = "#e6550d"
LABELS = {"core": "core\n(no checkpoints)", "checkpointed": "checkpointed\n(exactly-once)", "e2e": "end to end\n(HTTP → store)"}


def human(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.0f}k"
    return f"{v:.0f}"


def throughput(ax, doc):
    rows = doc["rows"]
    comparisons = [c for c in ("core", "checkpointed", "e2e") if any(r["comparison"] == c for r in rows)]
    width = 0.38
    # The end-to-end capacity; the paced run's throughput is its pace.
    rows = [r for r in rows if r["comparison"] != "e2e" or r["engine"] == "tally up"]
    for i, comparison in enumerate(comparisons):
        for r in (r for r in rows if r["comparison"] == comparison):
            flink = r["engine"].startswith("Flink")
            x = i + (width / 2 if flink else -width / 2)
            if comparison == "e2e":
                x = i
            s = r["events_per_s"]
            ax.bar(x, s["median"], width, color=FLINK if flink else TALLY,
                   yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]], capsize=4)
            ax.text(x, s["max"] * 1.15, human(s["median"]), ha="center", fontsize=8)
        ratio = doc.get("ratios", {}).get(comparison)
        if ratio:
            top = max(r["events_per_s"]["max"] for r in rows if r["comparison"] == comparison)
            ax.text(i, top * 2.0, f"tally/Flink {ratio:.1f}×", ha="center", fontsize=10, fontweight="bold")
    ax.set_yscale("log")
    ax.set_ylim(1e4, max(r["events_per_s"]["max"] for r in rows) * 5)
    ax.set_xticks(range(len(comparisons)), [LABELS[c] for c in comparisons])
    ax.set_ylabel("events/s (log scale), median of runs, min–max")
    ax.set_title("throughput, same workload and machine (Flink: a straightforward SQL job)")
    ax.bar(0, 0, color=TALLY, label="tally")
    ax.bar(0, 0, color=FLINK, label="Flink SQL")
    ax.legend(loc="upper right")


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
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [2.2, 1]})
    throughput(left, doc)
    latency(right, doc)
    fig.suptitle(f"tally vs Flink — {doc['machine']}, {doc['runs']} run(s) per row\n{doc['versions']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()

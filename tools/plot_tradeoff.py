#!/usr/bin/python3
"""Plot MEANet's trade-off curve from a demo report (tools/demo.sh writes report.json).

  /usr/bin/python3 tools/plot_tradeoff.py build/demo/report.json --out build/demo/tradeoff.png

Left: accuracy against the fraction of inputs sent to the cloud, over the sweep of the
cloud threshold T (test set), with the chosen operating point (T calibrated on the
validation split) and the reference accuracies (main block alone, MEANet at the edge,
cloud model alone). Right: estimated edge energy per input against the same fraction, with
the two baselines (main block only, send everything to the cloud).
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    try:
        with open(a.report) as f:
            r = json.load(f)
        curve = r["tradeoff_curve_test"]
        acc = r["accuracy"]
        chosen = r["chosen_point_test"]
        energy = r["energy_estimate_joules_per_input"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"plot_tradeoff.py: {a.report}: not a demo report ({e})")
    if not curve:
        sys.exit(f"plot_tradeoff.py: {a.report}: empty trade-off curve")
    pts = sorted(curve, key=lambda p: p["fraction_cloud"])
    frac = [100 * p["fraction_cloud"] for p in pts]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    ax1.plot(frac, [100 * p["accuracy"] for p in pts], "-", color="tab:blue", label="MEANet + cloud (sweep of T)")
    # Labels at different x positions: two equal accuracies must not print on top of each other.
    for key, label, style, x in [("main_alone", "main block alone", ":", 0.33), ("meanet_edge", "MEANet at the edge", "--", 0.66),
                                 ("cloud_alone", "cloud model alone", "-.", 1.0)]:
        ax1.axhline(100 * acc[key], linestyle=style, color="gray", linewidth=1)
        ax1.annotate(f"{label} {100 * acc[key]:.2f}%", (x * max(frac), 100 * acc[key]), ha="right", va="bottom", fontsize=8)
    ax1.plot([100 * chosen["fraction_cloud"]], [100 * chosen["accuracy"]], "o", color="tab:red",
             label="chosen T (calibrated on validation)")
    ax1.set_xlabel("inputs sent to the cloud (%)")
    ax1.set_ylabel("test accuracy (%)")
    lo = min(100 * acc["main_alone"], min(100 * p["accuracy"] for p in pts)) - 0.5
    ax1.set_ylim(lo, 100 * max(max(p["accuracy"] for p in pts), acc["cloud_alone"]) + 0.5)
    ax1.set_title("Accuracy vs. cloud traffic")
    ax1.legend(loc="lower right", fontsize=8)
    ax1.grid(alpha=0.3)

    ax2.plot(frac, [1e3 * p["energy_joules_per_input"] for p in pts], "-", color="tab:green", label="MEANet (sweep of T)")
    ax2.axhline(1e3 * energy["send_everything_to_cloud"], linestyle="-.", color="gray", linewidth=1)
    ax2.annotate("send everything to the cloud", (0, 1e3 * energy["send_everything_to_cloud"]), va="bottom", fontsize=8)
    ax2.axhline(1e3 * energy["main_block_only"], linestyle=":", color="gray", linewidth=1)
    ax2.annotate("main block only", (0, 1e3 * energy["main_block_only"]), va="bottom", fontsize=8)
    ax2.plot([100 * chosen["fraction_cloud"]], [1e3 * chosen["energy_joules_per_input"]], "o", color="tab:red",
             label="chosen T")
    ax2.set_xlabel("inputs sent to the cloud (%)")
    ax2.set_ylabel("estimated edge energy per input (mJ)")
    ax2.set_yscale("log")
    ax2.set_title("Estimated edge energy (model, not measured)")
    ax2.legend(loc="lower right", fontsize=8)
    ax2.grid(alpha=0.3, which="both")

    fig.suptitle(f"MEANet edge–cloud trade-off, Fashion-MNIST test set ({r['test_images']} images)")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

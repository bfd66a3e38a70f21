"""Figure: torch gradcheck (1 thread) ÷ gradlab per workload and phase, against issue 10's bars.

Reads ``results/architectures_<device>.json`` (written by ``bench_architectures.py``) and
writes ``docs/figures/bench_architectures_<device>.png``::

    python benchmarks/plot_architectures.py                 # cpu
    python benchmarks/plot_architectures.py --device gpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("cold", "cold_cached", "warm")
PHASE_LABELS = {"cold": "cold (empty cache)", "cold_cached": "cold, cache filled", "warm": "warm"}
#: Issue 10's bars, torch 1 thread ÷ gradlab (the suite's cold bar also asks ≤ ½ check_grads).
BARS = {
    "cnn": {"cold": 2.0, "warm": 10.0},
    "transformer": {"warm": 20.0},
    "suite": {"cold": 0.33, "cold_cached": 1.0},
}


def _seconds(r: dict[str, Any], phase: str) -> float | None:
    if phase == "cold_cached" and "cold_cached" not in r:
        phase = "cold"
    return r.get(phase, {}).get("seconds")


def ratios(data: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per workload and phase: torch 1 thread's time ÷ gradlab's."""
    out: dict[str, dict[str, float | None]] = {}
    for workload, res in data["workloads"].items():
        g, t = res.get("gradlab", {}), res.get("torch 1 thr", {})
        out[workload] = {}
        for phase in PHASES:
            a, b = _seconds(t, phase), _seconds(g, phase)
            out[workload][phase] = a / b if a and b else None
    return out


def plot(data: dict[str, Any], path: Path) -> None:
    """Grouped bars (log scale), one group per workload, the bars as red ticks."""
    rat = ratios(data)
    workloads = list(rat)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.26
    for i, phase in enumerate(PHASES):
        xs = [w + (i - 1) * width for w in range(len(workloads))]
        ys = [rat[w][phase] or 0 for w in workloads]
        ax.bar(xs, ys, width, label=PHASE_LABELS[phase])
        for x, wl in zip(xs, workloads, strict=True):
            bar = BARS.get(wl, {}).get(phase)
            if bar is not None:
                ax.plot([x - width / 2, x + width / 2], [bar, bar], color="red", lw=2.5)
    ax.plot([], [], color="red", lw=2.5, label="issue 10's bar")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel("torch gradcheck (1 thread) time ÷ gradlab time")
    load = data["machine"].get("load_average_at_start")
    ax.set_title(f"gradlab.check vs torch.autograd.gradcheck ({data['device']}, load {load})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    """Reads the JSON of ``--device`` and writes the figure."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    src = args.json or ROOT / "benchmarks" / "results" / f"architectures_{args.device}.json"
    out = args.out or ROOT / "docs" / "figures" / f"bench_architectures_{args.device}.png"
    data = json.loads(src.read_text())
    plot(data, out)
    for workload, r in ratios(data).items():
        print(workload, {p: None if v is None else round(v, 2) for p, v in r.items()})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

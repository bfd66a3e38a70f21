"""Figure: torch gradcheck (1 thread) ÷ gradlab per workload and phase, ratios on the bars.

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


def torch_failed(data: dict[str, Any], workload: str) -> bool:
    """Whether torch's gradcheck failed (or raised) on ``workload``."""
    torch = data["workloads"][workload].get("torch 1 thr", {})
    return any(torch.get(phase, {}).get("passed") is False for phase in PHASES)


def _label(ratio: float) -> str:
    if not ratio:
        return ""
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.3g}×"


def plot(data: dict[str, Any], path: Path) -> None:
    """Grouped bars (log scale), one group per workload, each labelled with its ratio."""
    rat = ratios(data)
    workloads = list(rat)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.26
    for i, phase in enumerate(PHASES):
        xs = [w + (i - 1) * width for w in range(len(workloads))]
        ys = [rat[w][phase] or 0 for w in workloads]
        bars = ax.bar(xs, ys, width, label=PHASE_LABELS[phase])
        ax.bar_label(bars, labels=[_label(y) for y in ys], fontsize=7, padding=1)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_yscale("log")
    ticks = [w + ("\n(torch failed)" if torch_failed(data, w) else "") for w in workloads]
    ax.set_xticks(range(len(workloads)), ticks)
    torch = "torch gradcheck (1 thread)" if data["device"] == "cpu" else "torch gradcheck"
    ax.set_ylabel(f"{torch} time ÷ gradlab time")
    where = data["device_name"]
    if where == "cpu":
        where = f"CPU, {data['machine'].get('cpu_count', '?')} cores"
    ax.set_title(f"gradlab.check vs torch.autograd.gradcheck ({where})")
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

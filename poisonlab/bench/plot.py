"""Plots of summary rows (matplotlib, headless): one panel per dataset, one line per series, 95% CI bars."""

from __future__ import annotations

import io
from pathlib import Path

from ..data.files import atomic_write_bytes


def write_plot(rows: list[dict], spec: dict, out_dir: str | Path) -> Path:
    """Plot `spec["y"]` against `spec["x"]` for each `spec["series"]`, the clean rows (no attack) at x = 0."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    x, y = spec["x"], spec["y"]
    for ax, dataset in zip(axes[0], datasets, strict=True):
        here = [r for r in rows if r["dataset"] == dataset]
        clean = [r for r in here if r["attack"] == "none"]
        for series in sorted({r[spec["series"]] for r in here if r["attack"] != "none"}):
            points = sorted(clean + [r for r in here if r[spec["series"]] == series], key=lambda r: r[x])
            values = [100 * r[y] for r in points]
            low = [100 * (r[y] - r[f"{y}_ci"][0]) for r in points]
            high = [100 * (r[f"{y}_ci"][1] - r[y]) for r in points]
            ax.errorbar([r[x] for r in points], values, yerr=[low, high], marker="o", capsize=3, label=series)
        ax.set(title=dataset, xlabel=x.replace("_", " "), ylabel=f"{y.replace('_', ' ')} (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(spec.get("title", ""))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path = Path(out_dir) / spec.get("file", "plot.png")
    atomic_write_bytes(path, buffer.getvalue())
    return path

"""Plots of summary rows (matplotlib, headless): one panel per dataset, one line per series, 95% CI bars."""

from __future__ import annotations

import io
from pathlib import Path

import torch

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


def write_poison_figure(scenarios, out_dir: str | Path, file: str = "poisons.png") -> Path:
    """One row per scenario (trial 0: the poisons the run kept, or crafted again when it kept none: crafting is
    deterministic): the target, the first base, its poison and the perturbation (scaled to fill [0, 1]), with the
    adversarial class named."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(len(scenarios), 4, figsize=(7.2, 1.9 * len(scenarios)), squeeze=False)
    for ax_row, scenario in zip(axes, scenarios, strict=True):
        data, poisons = first_trial_poisons(scenario, Path(out_dir) / "models")
        position = int(torch.nonzero(data.test.index == poisons.target_image_index)[0, 0])
        target = data.test.x[position]
        base, poison = data.train.x[poisons.indices[0]], poisons.x[0]
        change = poison - base
        change = (change - change.min()) / (change.max() - change.min()).clamp_min(1e-12)
        classes = data.train.classes
        titles = (f"target ({classes[int(data.test.y[position])]})",
                  f"base ({classes[poisons.target_class]})", "poison", "poison − base (scaled)")
        for ax, image, title in zip(ax_row, (target, base, poison, change), titles, strict=True):
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if image.shape[0] == 1 else None,
                      vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(f"{scenario.attack}\n{255 * scenario.eps:.3g}/255", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path = Path(out_dir) / file
    atomic_write_bytes(path, buffer.getvalue())
    return path


def first_trial_poisons(scenario, models_dir: Path):
    """Trial 0's data and poisons: those the run kept (`kept_poisons_path`), else crafted again."""
    from ..threat import PoisonSet
    from .plan import make_plan
    from .shared import scenario_networks, trial_data
    from .trial import craft, kept_poisons_path, set_up

    plan, kept = make_plan(scenario), kept_poisons_path(scenario, models_dir)
    if kept.is_file():
        return trial_data(plan, 0), PoisonSet.load(kept)
    networks = scenario_networks(plan, str(models_dir))
    setup = set_up(plan, networks, 0)
    return setup.data, craft(plan, networks, [setup])[0][0]

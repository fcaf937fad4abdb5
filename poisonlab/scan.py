"""`poisonlab scan`: rank a training set's samples by a detector's suspicion, write a CSV and an image grid.

The computation is `rank`; the files (CSV, PNG) are written by `write_scan`, which the CLI calls."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import Dataset
from .data.files import atomic_write_bytes
from .defenses import Detector
from .defenses.detect import auroc
from .models import Classifier


@dataclass(frozen=True)
class ScanResult:
    """Scores of every training sample, the order from most to least suspicious, and (when the poisons are
    known, e.g. from a saved PoisonSet) which samples are poisons."""

    train: Dataset
    scores: torch.Tensor
    order: torch.Tensor
    is_poison: torch.Tensor | None = None

    def recall_at(self, n: int) -> float | None:
        """The share of known poisons among the `n` top-ranked samples."""
        if self.is_poison is None or not self.is_poison.any():
            return None
        return float(self.is_poison[self.order[:n]].sum() / self.is_poison.sum())

    @property
    def auroc(self) -> float | None:
        return None if self.is_poison is None else auroc(self.scores, self.is_poison)


def data_fingerprint(train: Dataset) -> str:
    """A digest of which source samples a training subset holds, so a saved PoisonSet is applied to the same one."""
    return hashlib.sha256(train.index.numpy().tobytes()).hexdigest()[:16]


def content_digest(train: Dataset) -> str:
    """A digest of the images and labels themselves (names the model trained on them in the cache)."""
    digest = hashlib.sha256(train.x.numpy().tobytes())
    digest.update(train.y.numpy().tobytes())
    return digest.hexdigest()[:16]


def rank(detector: Detector, train: Dataset, model: Classifier | None, seed: int = 0,
         is_poison: torch.Tensor | None = None) -> ScanResult:
    """The training set from most to least suspicious, by the detector's ranking: its scores (`ranking=global`),
    or each class's own order interleaved (`ranking=per-class`: every class's most suspicious sample, then every
    class's second, ...), so that the top k × classes rows are what the detector removes at k per class."""
    scores = detector.score(train, model if detector.needs_model else None, seed=seed)
    order = torch.sort(scores, descending=True, stable=True).indices
    if getattr(detector, "ranking", "global") == "per-class":
        within = torch.empty(len(order), dtype=torch.long)  # each sample's rank inside its class
        for c in torch.unique(train.y).tolist():
            members = order[train.y[order] == c]
            within[members] = torch.arange(len(members))
        order = order[torch.sort(within[order], stable=True).indices]
    return ScanResult(train, scores, order, is_poison)


def write_scan(result: ScanResult, out: Path, top: int) -> tuple[Path, Path]:
    """scan.csv (every sample, most suspicious first) and top.png (a grid of the `top` first) in `out`."""
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["rank", "index", "source_index", "label", "class", "score"]
                    + (["is_poison"] if result.is_poison is not None else []))
    for rank_, i in enumerate(result.order.tolist(), 1):
        label = int(result.train.y[i])
        writer.writerow([rank_, i, int(result.train.index[i]), label, result.train.classes[label],
                         f"{float(result.scores[i]):.6g}"]
                        + ([int(result.is_poison[i])] if result.is_poison is not None else []))
    csv_path, png_path = out / "scan.csv", out / "top.png"
    atomic_write_bytes(csv_path, rows.getvalue().encode())
    atomic_write_bytes(png_path, image_grid(result, top))
    return csv_path, png_path


def image_grid(result: ScanResult, top: int) -> bytes:
    """PNG bytes: the `top` most suspicious images, each titled with its rank, index and label."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    picks = result.order[:top].tolist()
    cols = min(8, max(1, len(picks)))
    rows = -(-len(picks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, i) in enumerate(zip(axes.flat, picks, strict=False)):
        image = result.train.x[i].permute(1, 2, 0).numpy()
        ax.imshow(image.squeeze(2) if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1)
        mark = " *" if result.is_poison is not None and bool(result.is_poison[i]) else ""
        ax.set_title(f"#{k + 1} i={i}\n{result.train.classes[int(result.train.y[i])]}{mark}", fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()

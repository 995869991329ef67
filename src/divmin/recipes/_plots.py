"""Figures shared by recipes (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def density_grid_plot(x: torch.Tensor, target: torch.Tensor, fits: Mapping[str, torch.Tensor],
                      path: Path, *, title: str = "") -> Path:
    """One panel per fit: the target density shaded, the fit as a line. x, target, fits[k]: (G,)."""
    n = len(fits)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows), sharex=True, squeeze=False)
    xs, ts = x.detach().cpu().numpy(), target.detach().cpu().numpy()
    for ax, (name, dens) in zip(axes.flat, fits.items()):
        ax.fill_between(xs, ts, color="0.8", label="target")
        ax.plot(xs, dens.detach().cpu().numpy(), color="C0", lw=1.5, label="fit")
        ax.set_title(name, fontsize=9)
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

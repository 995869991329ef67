"""Figures shared by recipes (matplotlib, headless).

Every recipe figure has a title, labelled axes and a legend, and is written by
:func:`save_figure`: only on the main process (under ``torchrun`` every process
runs the recipe), with a JSON record in the PNG's text chunk ``divmin`` (read
back with :func:`figure_record`): the title, axis labels and legend entries the
figure shows, and the plotted numbers, so that a test can check both against
``results.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..engine import atomic_path  # noqa: E402
from ._registry import is_main_process  # noqa: E402

RECORD_KEY = "divmin"  # PNG text chunk holding the figure's record


def save_figure(fig: Any, path: str | Path, *, data: Any = None, dpi: int = 110) -> Path:
    """Lay out, write (main process only, with its record) and close ``fig``; return ``path``.

    ``data``: the plotted numbers (JSON-ready), stored in the record under "data".
    """
    fig.tight_layout()
    if is_main_process():
        record = {**_layout(fig), "data": data}
        with atomic_path(path) as tmp:  # never through a link planted at the figure's name
            fig.savefig(tmp, format="png", dpi=dpi, metadata={RECORD_KEY: json.dumps(record)})
    plt.close(fig)
    return Path(path)


def figure_record(path: str | Path) -> dict:
    """What :func:`save_figure` stored in the PNG at ``path``: title, xlabels, ylabels, legend, data."""
    from PIL import Image

    with Image.open(path) as img:
        return json.loads(img.text[RECORD_KEY])


def _layout(fig: Any) -> dict:
    axes = [ax for ax in fig.axes if ax.axison]
    legends = [*fig.legends, *(ax.get_legend() for ax in axes)]
    titles = [fig.get_suptitle(), *(ax.get_title() for ax in axes)]
    return {"title": next((t for t in titles if t), ""),
            "xlabels": [t for t in (fig.get_supxlabel(), *(ax.get_xlabel() for ax in axes)) if t],
            "ylabels": [t for t in (fig.get_supylabel(), *(ax.get_ylabel() for ax in axes)) if t],
            "legend": [t.get_text() for leg in legends if leg is not None for t in leg.get_texts()],
            "texts": [t.get_text() for ax in axes for t in ax.texts]}  # annotations drawn on the panels


def figure_legend(fig: Any, axes: Any, *, on: Any = None, **kw: Any) -> None:
    """One legend for the figure (or drawn on the panel ``on``): every distinct label of ``axes``, once."""
    seen: dict[str, Any] = {}
    for ax in getattr(axes, "flat", axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    (fig if on is None else on).legend(list(seen.values()), list(seen), **kw)


def density_grid_plot(x: torch.Tensor, target: torch.Tensor, fits: Mapping[str, torch.Tensor],
                      path: Path, *, title: str = "") -> Path:
    """One panel per fit: the target density shaded, the fit as a line. x, target, fits[k]: (G,)."""
    n = len(fits)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows + 0.6), sharex=True, squeeze=False)
    xs, ts = x.detach().cpu().numpy(), target.detach().cpu().numpy()
    for ax, (name, dens) in zip(axes.flat, fits.items()):
        ax.fill_between(xs, ts, color="0.8", label="target P")
        ax.plot(xs, dens.detach().cpu().numpy(), color="C0", lw=1.5, label="fit Q")
        ax.set_title(name, fontsize=9)
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.supxlabel("x", fontsize=9)
    fig.supylabel("density", fontsize=9)
    figure_legend(fig, axes, loc="upper right", fontsize=8)
    fig.suptitle(title or "target and fitted densities", fontsize=10)
    return save_figure(fig, path, data={"panels": list(fits)})


def bar_panel(ax: Any, bars: Mapping[str, float], *, errors: Mapping[str, float] | None = None,
              references: Mapping[str, float] | None = None, xlabel: str, ylabel: str,
              label: str = "mean over seeds (+- std)") -> dict:
    """One bar per entry (with an error bar when given), a dashed line per reference value, a legend.

    Returns the plotted numbers ({"bars", "errors", "references"}) for :func:`save_figure`.
    """
    names, values = list(bars), [float(v) for v in bars.values()]
    errs = [float((errors or {}).get(k, 0.0)) for k in names]
    ax.bar(range(len(names)), values, yerr=errs if any(errs) else None, capsize=3, color="C0", alpha=0.8,
           label=label)
    for c, (label, value) in enumerate((references or {}).items()):
        ax.axhline(float(value), color=f"C{c + 1}", ls="--", lw=1.2, label=label)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return {"bars": dict(zip(names, values)), "errors": dict(zip(names, errs)),
            "references": {k: float(v) for k, v in (references or {}).items()}}


def points_panels(rows: Sequence[Mapping[str, Any]], reference: Mapping[str, float], path: Path, *,
                  x_keys: Mapping[str, str], y_key: str, ylabel: str, label_key: str, reference_label: str,
                  title: str) -> Path:
    """One panel per ``x_keys`` entry (column -> axis label): a point per row at (row[x], row[y_key]),
    labelled by ``row[label_key]``, and the reference as a black star."""
    fig, axes = plt.subplots(1, len(x_keys), figsize=(4.5 * len(x_keys), 3.8), sharey=True, squeeze=False)
    for ax, (key, xlabel) in zip(axes.flat, x_keys.items()):
        ax.plot([reference[key]], [reference[y_key]], "k*", ms=11, label=reference_label)
        for c, r in enumerate(rows):
            ax.plot([r[key]], [r[y_key]], "o", color=f"C{c}", ms=8, label=r[label_key])
        ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    data = {"x": {k: [r[k] for r in rows] for k in x_keys}, "y": [r[y_key] for r in rows],
            "labels": [r[label_key] for r in rows], "reference": {k: reference[k] for k in (*x_keys, y_key)}}
    return save_figure(fig, path, data=data)


def students_plot(values: Mapping[str, float], std: Mapping[str, float], refs: Mapping[str, float], path: Path, *,
                  ce_label: str, ylabel: str, title: str, ylim: tuple[float | None, float | None]) -> Path:
    """One bar per student training method (mean +- std over seeds) against reference levels; the
    "ce" student (trained on the hard targets) becomes the reference line ``ce_label``."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if "ce" in values:
        refs = {**refs, ce_label: values["ce"]}
    data = bar_panel(ax, values, errors=std, references=refs, xlabel="student training method", ylabel=ylabel)
    ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path, data=data)

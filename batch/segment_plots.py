"""The PNG plots of the segment report (matplotlib, headless). Each takes plain numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.errors import StreamrecError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise StreamrecError(
            "the segment report draws its plots with matplotlib, which is not installed: "
            "reinstall streamrec (pip install -e .), which depends on it"
        ) from exc
    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_explained_variance(
    shares: Sequence[float], threshold: float, kept: int, path: Path
) -> None:
    """Cumulative explained variance against components, the threshold and the choice."""
    plt = _pyplot()
    cumulative = np.cumsum(shares)
    xs = np.arange(1, len(shares) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(xs, shares, color="#9ecae1", label="per component")
    ax.plot(xs, cumulative, marker="o", ms=3, color="#08519c", label="cumulative")
    ax.axhline(threshold, color="#d62728", ls="--", lw=1, label=f"threshold {threshold:.0%}")
    ax.axvline(kept, color="#555555", ls=":", lw=1, label=f"{kept} components kept")
    ax.set_xlabel("principal component")
    ax.set_ylabel("share of variance")
    ax.set_ylim(0, 1.02)
    ax.set_title("PCA explained variance (scaled features)")
    ax.legend(loc="center right", fontsize=8)
    _save(fig, path)


def plot_k_selection(
    ks: Sequence[int],
    inertia: Sequence[float],
    silhouette: Sequence[float],
    chosen: int,
    path: Path,
) -> None:
    """Inertia (elbow) and silhouette against k, the chosen k marked."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.plot(ks, inertia, marker="o", color="#08519c")
    left.set_title("inertia (within-segment sum of squares)")
    right.plot(ks, silhouette, marker="o", color="#2ca02c")
    right.set_title("silhouette (higher is better)")
    for ax in (left, right):
        ax.axvline(chosen, color="#d62728", ls="--", lw=1, label=f"chosen k = {chosen}")
        ax.set_xlabel("k")
        ax.set_xticks(list(ks))
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_sizes(sizes: dict[int, int], path: Path) -> None:
    plt = _pyplot()
    segments = sorted(sizes)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(segments) + 2), 3.8))
    bars = ax.bar(segments, [sizes[s] for s in segments], color="#6baed6")
    ax.bar_label(bars, fontsize=8)
    ax.set_xticks(segments)
    ax.set_xlabel("segment")
    ax.set_ylabel("users")
    ax.set_title("segment sizes")
    _save(fig, path)


def plot_projection(xy: np.ndarray, segments: np.ndarray, path: Path) -> None:
    """Users on the first two principal components, coloured by segment."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    cmap = plt.get_cmap("tab10")
    for n, s in enumerate(np.unique(segments)):
        mine = segments == s
        ax.scatter(xy[mine, 0], xy[mine, 1], s=8, alpha=0.6, color=cmap(n % 10), label=str(s))
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"users on the first two principal components ({len(xy)} shown)")
    ax.legend(title="segment", fontsize=8, markerscale=2)
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, agreement: float | None, path: Path) -> None:
    """Heatmap of segment (rows) against the classifier's prediction (columns)."""
    plt = _pyplot()
    k = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * k + 2.5), max(3.5, 0.6 * k + 1.8)))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    top = matrix.max() if matrix.size else 0
    for i in range(k):
        for j in range(k):
            color = "white" if matrix[i, j] > top / 2 else "black"
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("classifier's segment")
    ax.set_ylabel("cluster segment")
    title = "held-out users" if agreement is None else f"held-out users, agreement {agreement:.1%}"
    ax.set_title(title)
    _save(fig, path)

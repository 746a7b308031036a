"""PNG plots of evaluation results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from streamrec.batch.evaluate import EvalReport


def plot_models(report: EvalReport, path: str) -> None:
    """Grouped bars: precision, recall, NDCG and MAP at k for every model of the report."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    metrics = ["precision", "recall", "ndcg", "map"]
    k = report.models[0].ranking.k
    width = 0.8 / len(report.models)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for n, model in enumerate(report.models):
        values = [getattr(model.ranking, m) for m in metrics]
        xs = [i + n * width for i in range(len(metrics))]
        bars = ax.bar(xs, values, width, label=model.name)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks([i + width * (len(report.models) - 1) / 2 for i in range(len(metrics))])
    ax.set_xticklabels([f"{m}@{k}" for m in metrics])
    ax.set_ylabel("score")
    ax.set_title(
        f"{Path(report.options['train']).name} -> {Path(report.options['test']).name} "
        f"({report.options['mode']}, {report.models[0].ranking.users} users)"
    )
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

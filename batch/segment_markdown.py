"""report.md of the segment report, rendered from its metrics (pure: text in, text out)."""

from __future__ import annotations

from typing import Any

# The report's plots: key in metrics.json -> file name beside report.md.
PLOTS = {
    "explained_variance": "explained_variance.png",
    "k_selection": "k_selection.png",
    "segment_sizes": "segment_sizes.png",
    "projection": "projection.png",
    "confusion_matrix": "confusion_matrix.png",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def render_markdown(m: dict[str, Any]) -> str:
    """report.md from the metrics."""
    return "\n".join(_summary(m) + _choosing_k(m) + _plots_and_classifier(m) + _segments(m))


def _summary(m: dict[str, Any]) -> list[str]:
    kept = sum(m["explained_variance"][: m["n_components"]])
    clf = m["classifier"]
    return [
        "# User segments",
        "",
        f"{m['users']} users, {len(m['features'])} features; {m['method']}, k chosen by "
        f"silhouette from {m['k_range'][0]}..{m['k_range'][1]}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| segments (k) | {m['k']} |",
        f"| silhouette | {m['silhouette']:.3f} |",
        f"| PCA components | {m['n_components']} of {len(m['features'])} ({kept:.1%} of variance; "
        f"threshold {m['explained_variance_threshold']:.0%}) |",
        f"| classifier agreement | {_pct(m['classifier_agreement'])} ({clf['test_users']} held-out "
        f"users) |",
        "",
        f"Features: {', '.join(m['features'][:12])}{', ...' if len(m['features']) > 12 else ''}",
        "",
        "## Explained variance",
        "",
        f"![explained variance]({PLOTS['explained_variance']})",
        "",
    ]


def _choosing_k(m: dict[str, Any]) -> list[str]:
    gmm = m["method"] == "gmm"
    lines = [
        "## Choosing k",
        "",
        "| k | silhouette | inertia |" + (" log-likelihood |" if gmm else ""),
        "|---|---|---|" + ("---|" if gmm else ""),
    ]
    for s in m["per_k"]:
        mark = " **(chosen)**" if s["k"] == m["k"] else ""
        ll = f" {s['log_likelihood']:.1f} |" if gmm else ""
        lines.append(f"| {s['k']}{mark} | {s['silhouette']:.4f} | {s['inertia']:.1f} |{ll}")
    return lines


def _plots_and_classifier(m: dict[str, Any]) -> list[str]:
    clf = m["classifier"]
    return [
        "",
        f"![inertia and silhouette against k]({PLOTS['k_selection']})",
        "",
        "## Segment sizes",
        "",
        f"![segment sizes]({PLOTS['segment_sizes']})",
        "",
        "## 2-D projection",
        "",
        f"![projection]({PLOTS['projection']})",
        "",
        "## Are the segments distinct?",
        "",
        f"A {clf['name']} was trained on {clf['train_users']} users with their segments as "
        f"labels. On {clf['test_users']} held-out users it agrees with the segments "
        f"{_pct(clf['agreement'])} of the time; the confusion matrix is mostly diagonal "
        "when the segments differ in what their users consume.",
        "",
        f"![confusion matrix]({PLOTS['confusion_matrix']})",
        "",
    ]


def _segments(m: dict[str, Any]) -> list[str]:
    lines = [
        "## What each segment is about",
        "",
        "Distinctive: TF-IDF with segments as documents and items as terms (items "
        "over-represented in the segment). Popular: share of the segment's users with a "
        "positive rating of the item.",
        "",
    ]
    total = max(m["users"], 1)
    for seg in m["segments"]:
        lines += [
            f"### Segment {seg['segment']}: {seg['users']} users ({seg['users'] / total:.1%})",
            "",
            "| # | distinctive (TF-IDF) | popular (share of users) |",
            "|---|---|---|",
        ]
        for n in range(max(len(seg["distinctive"]), len(seg["popular"]))):
            d = seg["distinctive"][n] if n < len(seg["distinctive"]) else None
            p = seg["popular"][n] if n < len(seg["popular"]) else None
            left = f"{_cell(d['title'])} ({d['score']:.4f})" if d else ""
            right = f"{_cell(p['title'])} ({p['score']:.0%})" if p else ""
            lines.append(f"| {n + 1} | {left} | {right} |")
        lines.append("")
    return lines

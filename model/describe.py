"""What each model version is: how it was trained and chosen, how it scored, whether it went
live. Read from the model store for `streamrec models`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamrec.model import store

PROMOTION = "promotion.json"


def write_promotion(model_store: str | Path, version: str, decision: dict[str, Any]) -> None:
    """The promotion gate's decision on ``version`` (promoted, reason, refusal), beside it."""
    store.write_version_file(model_store, version, PROMOTION, json.dumps(decision).encode())


def describe(model_store: str | Path, version: str) -> dict[str, Any]:
    """One version: its meta.json, the gate's decision, and whether readers follow it."""
    meta = store.read_meta(model_store, version)
    raw = store.read_version_file(model_store, version, PROMOTION)
    return {
        "version": version,
        "current": store.current_version(model_store) == version,
        "promotion": None if raw is None else json.loads(raw),
        **{key: meta.get(key) for key in ("events", "users", "items", "data_cut_ms")},
        "params": meta.get("params"),
        "feedback": meta.get("feedback"),
        "tuning": meta.get("tuning"),
        "holdout": meta.get("holdout"),
    }


def describe_all(model_store: str | Path) -> list[dict[str, Any]]:
    """Every complete version, newest first."""
    return [describe(model_store, version) for version in reversed(store.versions(model_store))]


def _ndcg(metrics: dict[str, Any] | None) -> str:
    return "-" if not metrics else f"{float(metrics['ndcg']):.4f}"


def family_label(params: dict[str, Any]) -> str:
    """What ranks a version's lists: "als", or "ease <L2 penalty>"."""
    if params.get("family") == "ease":
        return f"ease {float(params.get('ease_l2', 0)):g}"
    return "als"


def table(rows: list[dict[str, Any]]) -> str:
    """One line per version: live or not, setting and how it was chosen, holdout NDCG of the
    version, popularity and the model it was compared with, and the gate's word."""
    head = (
        f"{'version':<26} {'live':<4} {'events':>8} {'family':<10} {'rank':>4} {'reg':>6} "
        f"{'alpha':>6} "
        f"{'chosen':<7} {'ndcg':>7} {'pop':>7} {'current':>7}  decision"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        params, tuning, holdout = row["params"] or {}, row["tuning"] or {}, row["holdout"] or {}
        chosen = "tuned" if tuning.get("tuned") else ("kept" if tuning else "config")
        decision = (row["promotion"] or {}).get("reason", "-")
        lines.append(
            f"{row['version']:<26} {'yes' if row['current'] else '':<4} "
            f"{row['events'] or 0:>8} {family_label(params):<10} {params.get('rank', '-'):>4} "
            f"{params.get('reg_param', '-'):>6} {params.get('alpha', '-'):>6} {chosen:<7} "
            f"{_ndcg(holdout.get('als')):>7} {_ndcg(holdout.get('popularity')):>7} "
            f"{_ndcg(holdout.get('current')):>7}  {decision}"
        )
    return "\n".join(lines)

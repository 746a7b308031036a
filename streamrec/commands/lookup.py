"""Reading what the jobs made: `streamrec recommend USER`, `streamrec serve`, `streamrec
models [VERSION]`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from streamrec.commands.common import command
from streamrec.schemas.config import Config


def register(sub: Any) -> None:
    rec = sub.add_parser("recommend", help="look up a user's recommendations in Redis")
    rec.add_argument("user", help="the user id (any characters; quote it in the shell)")
    rec.add_argument("-n", type=int, default=10, help="items to show (default 10)")
    rec.add_argument(
        "--exclude", action="append", metavar="ITEM", help="leave an item out (repeat for several)"
    )
    rec.add_argument("--items", help="MovieLens u.item file: show item titles")
    rec.add_argument("--json", action="store_true", help="print JSON instead of a table")
    command(rec, recommend)

    srv = sub.add_parser("serve", help="serve lookups over HTTP (GET /recommendations/{user})")
    srv.add_argument("--host", help="address to listen on (default serve.host)")
    srv.add_argument(
        "--port", type=int, help="port to listen on, 0 for any free one (default serve.port)"
    )
    command(srv, serve)

    models = sub.add_parser(
        "models", help="model versions: setting, how it was chosen, holdout scores, decision"
    )
    models.add_argument("version", nargs="?", help="one version in full (JSON), with trials")
    models.add_argument("--json", action="store_true", help="every version as JSON")
    command(models, describe_models)


def recommend(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.lookup import LookupClient, table

    titles: dict[str, str] = {}
    if args.items:
        from streamrec.model.item_metadata import read_movielens_items

        titles = read_movielens_items(args.items).titles
    with LookupClient.open(cfg.redis) as client:
        rec = client.lookup(args.user, args.n, args.exclude or ())
    if args.json:
        payload = rec.to_json()
        for item in payload["items"]:
            if item["item_id"] in titles:
                item["title"] = titles[item["item_id"]]
        print(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        print(table(rec, titles))
    # 1: nothing to recommend (no model published yet, or no list of any kind).
    return 0 if rec.items else 1


def serve(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.serve import serve as run_server

    return run_server(cfg, args.host, args.port)


def describe_models(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.commands.common import refuse_unless
    from streamrec.model.describe import describe, describe_all, table

    refuse_unless(args, ("--json",), args.version is None, "no VERSION (one version is JSON)")
    if args.version:
        print(json.dumps(describe(cfg.paths.model_store, args.version), indent=2))
        return 0
    rows = describe_all(cfg.paths.model_store)
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0

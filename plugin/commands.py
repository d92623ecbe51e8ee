"""`osneural search` and `osneural serve`: the CLI faces of the query plugin.

Both only parse arguments here; encoders load inside `run_*` so `osneural --help` stays instant.
`search` prints the same OpenSearch-shaped JSON the Python API returns and the HTTP service serves.
"""

from __future__ import annotations

import argparse
import json
import sys

from osneural.connection import ClusterConfig, ClusterConfigError, add_cluster_arguments


def configure_search(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="query text")
    parser.add_argument("--index", required=True, help="index to search")
    parser.add_argument("--spec", default="hybrid",
                        help="built-in spec name (hybrid, bm25, dense, ...) or a JSON file")
    parser.add_argument("--explain", action="store_true", help="per-hit score and rank per stage")
    parser.add_argument("--size", type=int, default=None, help="override the spec's size")
    add_cluster_arguments(parser)


def run_search(args: argparse.Namespace) -> int:
    from opensearchpy import TransportError
    from osneural.plugin.resources import StageError
    from osneural.plugin.searcher import Searcher, SearchError
    from osneural.plugin.spec import SpecError, load_spec, parse_spec

    try:
        client = ClusterConfig.from_args(args).client()
    except ClusterConfigError as exc:
        print(f"osneural search: {exc}", file=sys.stderr)
        return 2
    try:
        data = load_spec(args.spec).to_dict()
        if args.explain:
            data["explain"] = True
        if args.size is not None:
            data["size"] = args.size
        result = Searcher(client, args.index).search(args.text, parse_spec(data))
    except (SpecError, StageError) as exc:
        print(f"osneural search: {exc}", file=sys.stderr)
        return 2
    except SearchError as exc:
        print(f"osneural search: {exc}", file=sys.stderr)
        return 1
    except TransportError as exc:
        print(f"osneural search: OpenSearch answered {exc.status_code}: {exc.error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def configure_serve(parser: argparse.ArgumentParser) -> None:
    add_cluster_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9280)
    parser.add_argument("--allow-index", action="append", default=None, metavar="PATTERN",
                        help="index name pattern callers may reach (repeatable; default: all)")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument("--warm", action="append", default=None,
                        choices=["dense", "sparse", "multivector"],
                        help="encoder kinds to load at startup")


def run_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn
    from osneural.plugin.server import create_app

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cluster = ClusterConfig.from_args(args, timeout=30)
    except ClusterConfigError as exc:
        print(f"osneural serve: {exc}", file=sys.stderr)
        return 2
    app = create_app(cluster, allow_index=args.allow_index, max_body_bytes=args.max_body_bytes,
                     warm=args.warm)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0

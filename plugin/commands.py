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
    parser.add_argument("--spec", default=None,
                        help="built-in spec name (hybrid, bm25, dense, ...) or a JSON file; "
                             "default: hybrid, or the best built-in the index can run")
    parser.add_argument("--body", default=None, metavar="JSON",
                        help="_search body options (aggs, highlight, sort, search_after, "
                             "post_filter, collapse, min_score, track_total_hits, ...)")
    parser.add_argument("--explain", action="store_true", help="per-hit score and rank per stage")
    parser.add_argument("--size", type=int, default=None, help="override the spec's size")
    add_cluster_arguments(parser)


def run_search(args: argparse.Namespace) -> int:
    from opensearchpy import TransportError
    from osneural.plugin.resources import StageError
    from osneural.plugin.searcher import Searcher, SearchError
    from osneural.plugin.spec import SpecError, load_spec

    try:
        client = ClusterConfig.from_args(args).client()
    except ClusterConfigError as exc:
        print(f"osneural search: {exc}", file=sys.stderr)
        return 2
    try:
        body = json.loads(args.body) if args.body else {}
        if not isinstance(body, dict):
            raise SpecError("--body: must be a JSON object")
        if args.explain:
            body["explain"] = True
        if args.size is not None:
            body["size"] = args.size
        spec = None if args.spec is None else load_spec(args.spec)
        result = Searcher(client, args.index).search(args.text, spec, body, spec_name=args.spec)
    except (SpecError, StageError, json.JSONDecodeError) as exc:
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
    from osneural.plugin.request_guard import Limits

    d = Limits()
    add_cluster_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (a non-loopback one needs --allow-index)")
    parser.add_argument("--port", type=int, default=9280)
    parser.add_argument("--allow-index", action="append", default=None, metavar="PATTERN",
                        help="index name pattern callers may reach (repeatable or a comma list; "
                             "default: all, and then loopback only)")
    parser.add_argument("--auth", choices=["passthrough", "service"], default="passthrough",
                        help="passthrough (default): forward each caller's Authorization so the "
                             "cluster's security decides; service: act with this service's own "
                             "credentials (--user/--password), never the caller's")
    parser.add_argument("--allow-scripts", action="store_true",
                        help="let callers run scripts (script queries, script_fields, runtime "
                             "fields, search pipelines)")
    parser.add_argument("--allow-profile", action="store_true",
                        help="let callers use profile and error_trace")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument("--max-first-stages", type=int, default=d.max_first_stages)
    parser.add_argument("--max-rescore-stages", type=int, default=d.max_rescore_stages)
    parser.add_argument("--max-query-chars", type=int, default=d.max_query_chars)
    parser.add_argument("--max-json-depth", type=int, default=d.max_json_depth)
    parser.add_argument("--max-concurrent", type=int, default=d.max_concurrent,
                        help="neural searches run at once (each gets its own stage threads)")
    parser.add_argument("--warm", action="append", default=None,
                        choices=["dense", "sparse", "multivector"],
                        help="encoder kinds to load at startup (default: every exported one)")
    parser.add_argument("--no-warm", action="store_true",
                        help="load encoders at their first query instead of at startup")
    from osneural.plugin.workers import default_workers

    parser.add_argument("--workers", type=int, default=None,
                        help="processes answering on the port, each with its own encoders and "
                             f"caches (default: one per two cores, here {default_workers()})")
    parser.add_argument("--graceful-timeout", type=float, default=30.0,
                        help="seconds SIGTERM waits for in-flight requests before workers exit "
                             "(default 30)")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _warm_kinds(args: argparse.Namespace) -> list[str]:
    """--warm as given, else every default encoder that is exported (--no-warm: none)."""
    if args.no_warm:
        return []
    if args.warm:
        return list(dict.fromkeys(args.warm))
    from osneural.encoders.defaults import default_export_dir, is_exported

    return [k for k in ("dense", "sparse", "multivector") if is_exported(default_export_dir(k))]


def run_serve(args: argparse.Namespace) -> int:
    import logging

    from osneural.plugin.request_guard import Limits

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # repeatable and comma lists alike (index names cannot contain commas)
    args.allow_index = [p.strip() for v in args.allow_index or [] for p in v.split(",")
                        if p.strip()] or None
    if not _is_loopback(args.host) and not args.allow_index:
        print(f"osneural serve: refusing to listen on {args.host} without --allow-index: "
              "name the indices callers may reach (e.g. --allow-index 'docs*')", file=sys.stderr)
        return 2
    try:
        cluster = ClusterConfig.from_args(args, timeout=30)
    except ClusterConfigError as exc:
        print(f"osneural serve: {exc}", file=sys.stderr)
        return 2
    from osneural.plugin.workers import AppFactory, default_workers, run_group

    if args.workers is None:
        args.workers = default_workers()
    for name in ("max_first_stages", "max_rescore_stages", "max_query_chars", "max_json_depth",
                 "max_concurrent", "workers"):
        if getattr(args, name) < 1:
            print(f"osneural serve: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    limits = Limits(max_first_stages=args.max_first_stages,
                    max_rescore_stages=args.max_rescore_stages,
                    max_query_chars=args.max_query_chars, max_json_depth=args.max_json_depth,
                    max_concurrent=args.max_concurrent)
    factory = AppFactory(dict(cluster=cluster, allow_index=args.allow_index,
                              max_body_bytes=args.max_body_bytes, warm=_warm_kinds(args),
                              auth=args.auth, allow_scripts=args.allow_scripts,
                              allow_profile=args.allow_profile, limits=limits))
    try:
        return run_group(factory, host=args.host, port=args.port, workers=args.workers,
                         graceful_timeout=args.graceful_timeout)
    except OSError as exc:  # the port is taken (by another program) or not ours to bind
        print(f"osneural serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

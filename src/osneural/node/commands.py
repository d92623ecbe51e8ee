"""`osneural opensearch start|stop|status`: the local node for development, demos and tests."""

from __future__ import annotations

import argparse
import json
import sys

from osneural.node.distribution import DEFAULT_VERSION
from osneural.node.errors import NodeError
from osneural.node.launcher import DEFAULT_HEAP, DEFAULT_HTTP_PORT, LocalCluster


def configure_opensearch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--name", default="default", help="cluster name (one folder per cluster)")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes on loopback (start)")
    parser.add_argument("--port", type=int, default=DEFAULT_HTTP_PORT,
                        help="HTTP port of the first node; transport ports are +100 (start)")
    parser.add_argument("--heap", default=DEFAULT_HEAP, help="JVM heap per node, e.g. 512m or 1g (start)")
    parser.add_argument("--version", default=DEFAULT_VERSION, help="OpenSearch 3.x version (start)")


def run_opensearch(args: argparse.Namespace) -> int:
    try:
        if args.action == "start":
            cluster = LocalCluster(name=args.name, nodes=args.nodes, http_port=args.port,
                                   heap=args.heap, version=args.version)
            url = cluster.start(log=lambda m: print(m, file=sys.stderr))
            health = cluster.health() or {}
            print(f"{url} {health.get('status', 'unknown')} ({health.get('number_of_nodes', '?')} node(s))")
            return 0
        cluster = LocalCluster.load(args.name)
        if cluster is None:
            print(f"no local cluster named {args.name!r} was ever started; run `osneural opensearch start`",
                  file=sys.stderr)
            return 1
        if args.action == "stop":
            pids = cluster.stop()
            print(f"stopped {len(pids)} node(s)" if pids else "no node was running")
            return 0
        health = cluster.health()
        if health is None:
            print(f"{cluster.url} not answering", file=sys.stderr)
            return 1
        print(f"{cluster.url} {health['status']} {json.dumps(health)}")
        return 0
    except NodeError as exc:
        print(f"osneural opensearch {args.action}: {exc}", file=sys.stderr)
        return 1

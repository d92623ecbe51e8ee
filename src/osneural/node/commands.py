"""`osneural opensearch start|stop|status`: the local node for development, demos and tests.

`start` on a cluster some of whose nodes died brings the missing ones back on their recorded
ports (the recorded layout wins; --nodes/--port only shape a new or stopped cluster). `status`
lists every node with its state and exits 1 when one is missing or not answering, so scripts and
health checks never read "green" off the survivors of a degraded cluster.
"""

from __future__ import annotations

import argparse
import json
import sys

from osneural.node.distribution import DEFAULT_VERSION
from osneural.node.errors import NodeError
from osneural.node.launcher import DEFAULT_HEAP, DEFAULT_HTTP_PORT, LocalCluster, spread_port_start
from osneural.node.plugins import parse_plugins


def configure_opensearch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--name", default="default", help="cluster name (one folder per cluster)")
    parser.add_argument("--nodes", type=int, default=None,
                        help="number of nodes on loopback (start; default: as recorded, else 1)")
    parser.add_argument("--port", type=_port, default=None,
                        help="HTTP port of the first node; transport ports are +100 "
                             f"(start; default: as recorded, else {DEFAULT_HTTP_PORT}). A port "
                             "named here is never changed: a taken one is an error. `auto`: the "
                             "launcher picks a free block below the kernel's ephemeral range and "
                             "moves to another when a node cannot bind its port")
    parser.add_argument("--heap", default=None,
                        help=f"JVM heap per node, e.g. 512m or 1g (start; default {DEFAULT_HEAP})")
    parser.add_argument("--version", default=None,
                        help=f"OpenSearch 3.x version (start; default {DEFAULT_VERSION})")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument("--plugins", default=None,
                        help="start: extra plugins, comma list of ml-commons,neural-search "
                             "(installed from Maven Central for the node's version, with DJL's "
                             "libraries provided offline; see osneural.node.plugins)")


def _port(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        port = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--port takes a number or `auto`, not {value!r}") from exc
    if not 1 <= port <= 65535 - 100:
        raise argparse.ArgumentTypeError(f"--port {port} leaves no room for its transport port (+100)")
    return port


def run_opensearch(args: argparse.Namespace) -> int:
    try:
        if args.action == "start":
            cluster = _cluster_to_start(args)
            cluster.start(log=lambda m: print(m, file=sys.stderr))
            health = cluster.health() or {}
            print(f"{','.join(s.url for s in cluster.specs)} {health.get('status', 'unknown')} "
                  f"({health.get('number_of_nodes', '?')} node(s))")
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
        return _status(cluster, args)
    except NodeError as exc:
        print(f"osneural opensearch {args.action}: {exc}", file=sys.stderr)
        return 1


def _cluster_to_start(args: argparse.Namespace) -> LocalCluster:
    """The recorded cluster (its nodes, ports, heap) when there is one, else a new one from
    the flags; a flag that contradicts a recorded cluster with live nodes is refused by start."""
    recorded = LocalCluster.load(args.name)
    auto = args.port == "auto"
    if recorded is None:
        return LocalCluster(name=args.name, nodes=args.nodes or 1,
                            http_port=spread_port_start() if auto else args.port or DEFAULT_HTTP_PORT,
                            heap=args.heap or DEFAULT_HEAP, version=args.version or DEFAULT_VERSION,
                            plugins=parse_plugins(getattr(args, "plugins", None)), auto_ports=auto)
    # a recorded cluster keeps its ports (its nodes rejoin on them); with `auto` a stopped one
    # moves when a port was taken meanwhile
    return LocalCluster(
        name=args.name,
        auto_ports=auto and not recorded.running_pids(),
        nodes=args.nodes or recorded.nodes,
        http_port=recorded.http_port if auto else args.port or recorded.http_port,
        heap=args.heap or recorded.heap,
        version=args.version or recorded.version,
        root=recorded.root,
        plugins=parse_plugins(args.plugins) if getattr(args, "plugins", None) else recorded.plugins,
    )


def _status(cluster: LocalCluster, args: argparse.Namespace) -> int:
    """Every node with its state; exit 1 unless every node runs and answers."""
    rows = cluster.node_states()
    health = cluster.health()
    ok = all(r["state"] == "running" for r in rows) and health is not None
    if getattr(args, "json", False):
        print(json.dumps({"cluster": cluster.name, "ok": ok, "nodes": rows, "health": health}))
        return 0 if ok else 1
    up = sum(r["state"] == "running" for r in rows)
    if health is None:
        print(f"cluster {cluster.name!r}: no node answers ({up}/{len(rows)} running)")
    else:
        print(f"cluster {cluster.name!r}: {health.get('status')}, {health.get('number_of_nodes')} "
              f"node(s) joined, {up}/{len(rows)} recorded node(s) running")
    for r in rows:
        pid = f"pid {r['pid']}" if r["pid"] else "no process"
        print(f"  {r['name']:<8} {r['url']:<24} {r['state']:<14} {pid}")
    if not ok:
        print(f"not every node is running; `osneural opensearch start --name {cluster.name}` "
              "brings the missing ones back", file=sys.stderr)
    return 0 if ok else 1

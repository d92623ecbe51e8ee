"""Resident memory of `osneural serve` side by side under the same traffic: one single-worker
`serve` per variant (each with its own environment), all in front of the same node, each
driven by its own client processes with `bench/soak.py`'s request mix, RSS sampled together.

    python bench/serve_memory.py --url http://127.0.0.1:9200 --minutes 12 --clients 2 \\
        --variant default:MALLOC_ARENA_MAX=16 --variant capped:

Why side by side: on a shared machine the load drifts, and a service's memory moves with its
traffic; variants that share one node, one machine and one minute-by-minute load differ only by
their setting. The node must hold `soak-docs` (`bench/soak.py --keep` builds it, or
`osneural ingest` of the first 500 SciFact documents with the default representations).
A variant is `NAME:VAR=VALUE,VAR=VALUE` (nothing after the colon: the defaults).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import soak  # bench/soak.py: its request mix, client loop and /proc sampling

from osneural.node.launcher import free_port_block, spread_port_start


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME:VAR=VALUE,...")
    env = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise argparse.ArgumentTypeError(f"--variant {text!r}: {item!r} is not VAR=VALUE")
        env[key] = value
    return name, env


def start(url: str, env: dict[str, str], log_path: Path, slot: int) -> tuple[Any, str]:
    port = free_port_block(1, start=spread_port_start(base=13000 + 300 * slot, span=200))
    proc = subprocess.Popen(
        [sys.executable, "-m", "osneural.cli", "serve", "--url", url, "--port", str(port),
         "--workers", "1", "--allow-index", "soak-*"],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **env})
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: Any, base: str, name: str) -> None:
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve for variant {name!r} exited with {proc.returncode}")
        try:
            r = httpx.get(base + "/_osneural/health", timeout=10)
            if r.status_code == 200 and len(r.json().get("encoders_loaded", [])) == 3:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"serve for variant {name!r} did not come up")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="a running node holding soak-docs")
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--clients", type=int, default=2, help="client processes per variant")
    ap.add_argument("--variant", action="append", type=parse_variant, required=True)
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=None, help="write the samples as JSON here")
    args = ap.parse_args(argv)
    variants = dict(args.variant)
    work = Path(tempfile.mkdtemp(prefix="osneural-serve-memory-"))
    queries = [json.loads(line)["text"]
               for line in (soak.beir_dir("scifact") / "queries.jsonl").open()]
    serves = {n: start(args.url, env, work / f"{n}.log", i) for i, (n, env) in enumerate(variants.items())}
    clients: list[Any] = []
    samples: list[dict[str, Any]] = []
    try:
        for name, (proc, base) in serves.items():
            wait_ready(proc, base, name)
        samples.append({"minute": 0.0, **{n: soak.proc_stats(p.pid) for n, (p, _b) in serves.items()}})
        t0 = time.time()
        t_end = t0 + args.minutes * 60
        ctx = mp.get_context("spawn")
        for name, (_proc, base) in serves.items():
            for c in range(args.clients):
                clients.append(ctx.Process(target=soak.client_main, args=(
                    c, base, queries, t_end, str(work / f"{name}-{c}.csv"), 1000 + c)))
        for c in clients:
            c.start()
        while time.time() < t_end:
            time.sleep(min(args.sample_s, max(0.0, t_end - time.time())))
            row = {"minute": round((time.time() - t0) / 60, 2),
                   **{n: soak.proc_stats(p.pid) for n, (p, _b) in serves.items()}}
            samples.append(row)
            soak.log(json.dumps({n: row[n]["rss_mb"] for n in serves if row.get(n)}))
        for c in clients:
            c.join(timeout=300)
    finally:
        for proc, _base in serves.values():
            proc.terminate()
        for proc, _base in serves.values():
            proc.wait(timeout=120)
    requests = {n: sum(len((work / f"{n}-{c}.csv").read_text().splitlines())
                       for c in range(args.clients)) for n in serves}
    report = {"variants": variants, "requests": requests, "samples": samples}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    print("| minute | " + " | ".join(f"{n} RSS MB" for n in serves) + " |")
    print("|---:|" + "---:|" * len(serves))
    for row in samples:
        print(f"| {row['minute']:.1f} | " + " | ".join(
            f"{row[n]['rss_mb']:.1f}" if row.get(n) else "-" for n in serves) + " |")
    print("| requests | " + " | ".join(f"{requests[n]:,}" for n in serves) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

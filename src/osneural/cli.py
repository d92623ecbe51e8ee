"""The `osneural` console script: one entry point, one subcommand per area.

Each subcommand lives beside the code it drives, in a module that defines
`configure_<name>(parser)` and `run_<name>(args) -> int`; this file only wires them, and keeps
heavy imports (onnxruntime, torch) out of `osneural --help`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# name -> (module holding configure_<name>/run_<name>, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "opensearch": ("osneural.node.commands", "fetch, start, stop or inspect a local OpenSearch node"),
    "export": ("osneural.encoders.commands", "export a Hugging Face checkpoint to ONNX"),
    "models": ("osneural.encoders.commands", "list the encoders available offline"),
    "ingest": ("osneural.ingest.commands", "encode a corpus and bulk-load it into OpenSearch"),
    "search": ("osneural.plugin.commands", "run a retrieval pipeline against an index"),
    "serve": ("osneural.plugin.commands", "serve an OpenSearch-compatible _search endpoint"),
    "eval": ("osneural.eval.commands", "evaluate pipelines on a BEIR dataset"),
    "tune": ("osneural.eval.tune", "fit a fusion spec to judged queries (k-fold cross-validated)"),
    "demo": ("osneural.demo", "ingest a sample corpus into the local node and search it"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="osneural", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not module_name.startswith(exc.name or "\0"):
                raise
            sp.set_defaults(_run=_unavailable(name, exc))
            continue
        getattr(module, f"configure_{name}")(sp)
        sp.set_defaults(_run=getattr(module, f"run_{name}"))
    return parser


def _unavailable(name: str, exc: Exception):
    def run(_args: argparse.Namespace) -> int:
        print(f"osneural {name}: not available in this build ({exc})", file=sys.stderr)
        return 2

    return run


def main(argv: Sequence[str] | None = None) -> int:
    # numpy's BLAS only ever sees small matrices here (token pooling, query-side math); its idle
    # threads would spin against onnxruntime's for the same two cores. Set before numpy loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

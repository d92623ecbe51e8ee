"""`osneural ingest CORPUS --index NAME ...`: the command-line face of `index_corpus` and, with
`--ray [ADDRESS]`, of `ray_index_corpus` (same checks, failure report, `--resume` and exit codes).

CORPUS is a JSONL file, a folder (BEIR layout or several JSONL files), or `sample` for the
built-in stdlib-docstrings corpus; or, with `--from-index SOURCE`, the documents of an existing
index (copied with all their fields into `--index`, or enriched where they are with
`--in-place`; `--swap-alias` then moves the app's alias). `--mapping FILE` maps the app's own
fields (merged beside osneural's). Exit status: 0 all good, 1 some documents failed (see the
failure report; the others are indexed), 2 nothing could be ingested or the run had to stop (bad
arguments, index mismatch, empty corpus, cluster unreachable at the start or for a whole batch,
a Ray worker lost for good -- progress so far is kept and `--resume` continues). Errors are one
line on stderr (plus the summary so far when the run stopped midway), never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from osneural.connection import ClusterConfigError, add_cluster_arguments


def configure_ingest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", nargs="?", default=None,
                        help="corpus.jsonl, a folder of JSONL files, or 'sample' (or --from-index)")
    parser.add_argument("--index", default=None,
                        help="target index name (with --in-place: the source, may be left out)")
    parser.add_argument("--from-index", default=None, metavar="SOURCE",
                        help="read the documents of an existing index (or alias) instead of a "
                             "corpus file: all their fields and SOURCE's mapping are kept")
    parser.add_argument("--swap-alias", default=None, metavar="NAME",
                        help="with --from-index: when no document failed, move alias NAME from "
                             "SOURCE to --index in one _aliases call")
    parser.add_argument("--in-place", action="store_true",
                        help="with --from-index: add the representations to SOURCE itself "
                             "(only those needing no index.knn, unless SOURCE has it)")
    parser.add_argument("--mapping", default=None, metavar="FILE",
                        help="JSON mapping of the app's own fields ({\"properties\": ...} or an "
                             "index body with mappings and settings), merged with osneural's")
    parser.add_argument("--representations", default=None,
                        help="comma list of dense,sparse,binary,pq,multivector,float_tokens or "
                             "'all' (default for a new index: all but float_tokens, the float16 "
                             "token copies for exact MaxSim; an existing index keeps its own)")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per encode/bulk batch")
    parser.add_argument("--resume", action="store_true", help="skip ids already in the index")
    parser.add_argument("--id-field", default="_id")
    parser.add_argument("--title-field", default="title", help="a field or dotted path")
    parser.add_argument("--text-field", action="append", default=None,
                        help="text to encode (default 'text'): a field or dotted path; repeat it "
                             "or give a comma list to join several")
    parser.add_argument("--failures", default=None,
                        help="failure report path (default: <corpus folder>/<index>.failures.jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N sample documents")
    parser.add_argument("--pool-factor", type=float, default=None,
                        help="token pooling factor (default 4: a quarter of the tokens kept as "
                             "cluster means; 1 = off)")
    parser.add_argument("--token-code", default=None, type=_token_code,
                        help="how mv_codes codes a token (new index): bin2p224 (default: 2 bits "
                             "over the tokens' 224 principal directions, 56 B per token), bin2 (2 "
                             "bits per dimension, 96 B per 384-d token), pq (PQ M=192, 192 B), or "
                             "another bit code of bench/token_bits.py (bin1, res2s, bin2p256, ...)")
    parser.add_argument("--train-docs", type=int, default=2000, help="codec training sample size")
    parser.add_argument("--fde-dtype", choices=("int8", "float32"), default="int8",
                        help="MUVERA FDE as a k-NN byte vector (default; 2 KB per document, same "
                             "nDCG@10 as float32 on SciFact and NFCorpus) or float32 (8 KB)")
    parser.add_argument("--space-type", choices=("cosinesimil", "innerproduct"), default="cosinesimil")
    parser.add_argument("--engine", choices=("lucene", "faiss"), default="lucene",
                        help="k-NN engine (faiss needs the native libraries on the cluster)")
    parser.add_argument("--matryoshka", default="", help="comma list of extra dense_<dim> fields")
    parser.add_argument("--shards", type=int, default=None,
                        help="number_of_shards of a new index (default: the cluster's)")
    parser.add_argument("--replicas", type=int, default=None,
                        help="number_of_replicas (a new index; an existing one is updated)")
    parser.add_argument("--index-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="index setting for a new index, repeatable (e.g. codec=best_compression"
                             "); dynamic ones are applied to an existing index too")
    parser.add_argument("--bulk-refresh-interval", default="auto", metavar="INTERVAL",
                        help="index.refresh_interval while loading (e.g. -1 or 30s), restored "
                             "after; 'auto' (default) loads an index whose interval is unset "
                             "with 30s, 'keep' leaves the index's own")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="encode and load with a pool of Ray actors: a cluster ADDRESS "
                             "(ray://host:10001 or host:6379, 'auto'), or a local Ray when omitted")
    parser.add_argument("--ray-workers", type=int, default=2, help="Ray actors (with --ray)")
    parser.add_argument("--threads-per-worker", type=int, default=1,
                        help="ONNX threads per Ray actor (with --ray)")
    parser.add_argument("--max-retries", type=int, default=5,
                        help="retries of a bulk write or resume check the cluster did not answer")
    parser.add_argument("--retry-backoff", type=float, default=1.0, metavar="SECONDS",
                        help="first retry delay, doubled per retry")
    parser.add_argument("--sparse-ann", action="store_true",
                        help="also write the sparse weights to <index>-sparse-ann, a neural-search "
                             "sparse_vector (SEISMIC) index, for the sparse stage's method: seismic "
                             "(needs neural-search >= 3.3 on the cluster)")
    parser.add_argument("--seismic-threshold", type=int, default=1_000_000, metavar="DOCS",
                        help="with --sparse-ann: segments with fewer documents are scored exactly")
    parser.add_argument("--seismic-n-postings", type=int, default=None, metavar="DOCS",
                        help="with --sparse-ann: documents kept per posting list "
                             "(default: neural-search's, 0.0005 x segment documents)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_cluster_arguments(parser)


def _token_code(value: str) -> str:
    """argparse type of `--token-code`: "pq" or a bit code `parse_token_code` reads."""
    from osneural.ingest.plan import parse_token_code

    if value != "pq":
        try:
            parse_token_code(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def parse_index_settings(values: list[str]) -> dict[str, str]:
    """`KEY=VALUE` strings -> settings (keys with or without the `index.` prefix)."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ValueError(f"--index-setting must be KEY=VALUE, got {item!r}")
        out[key.removeprefix("index.")] = value.strip()
    return out


def load_mapping_file(path: str) -> tuple[dict, dict]:
    """(mappings, settings) of a `--mapping` file; `ValueError` naming the file otherwise."""
    from osneural.mappings import app_mapping_from_json

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ValueError(f"--mapping {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--mapping {path} is not JSON: {exc}") from None
    return app_mapping_from_json(data, f"--mapping {path}")


def run_ingest(args: argparse.Namespace) -> int:
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import TransportError
    from osneural.ingest.corpus import CorpusError, FieldNames
    from osneural.ingest.indexer import CodecParams, IngestError, index_corpus, index_options
    from osneural.ingest.prepare import connection_reason, transport_reason
    from osneural.ingest.sample import sample_corpus

    from osneural.connection import ClusterConfig

    fields = FieldNames(args.id_field, args.title_field, ",".join(args.text_field or ["text"]))
    problem = None
    if args.from_index and args.corpus:
        problem = "give a CORPUS or --from-index SOURCE, not both"
    elif not args.from_index and not args.corpus:
        problem = "give a CORPUS (file, folder or 'sample') or --from-index SOURCE"
    elif args.in_place and not args.index:
        args.index = args.from_index
    if not problem and not args.index:
        problem = "--index is required"
    if problem:
        print(f"osneural ingest: {problem}", file=sys.stderr)
        return 2
    corpus = sample_corpus(args.limit) if args.corpus == "sample" else args.corpus
    try:
        mdims = [int(d) for d in args.matryoshka.split(",") if d.strip()]
    except ValueError:
        print(f"osneural ingest: --matryoshka must be integers, got {args.matryoshka!r}", file=sys.stderr)
        return 2
    try:
        options = index_options(
            space_type=args.space_type, engine=args.engine, matryoshka_dims=mdims,
            index_settings=parse_index_settings(args.index_setting), shards=args.shards,
            replicas=args.replicas, bulk_refresh_interval=args.bulk_refresh_interval)
        if args.mapping:
            app_mapping, app_settings = load_mapping_file(args.mapping)
            options = dataclasses.replace(options, app_mapping=app_mapping,
                                          app_settings=app_settings,
                                          mapping_origin=f"--mapping {args.mapping}")
        config = ClusterConfig.from_args(args, timeout=120)
    except (ClusterConfigError, ValueError) as exc:
        print(f"osneural ingest: {exc}", file=sys.stderr)
        return 2
    common = dict(
        representations=args.representations, batch_size=args.batch_size, resume=args.resume,
        fields=fields,
        failure_report=args.failures, progress=not args.no_progress,
        codec_params=CodecParams(train_docs=args.train_docs, fde_dtype=args.fde_dtype,
                                 **({"pool_factor": args.pool_factor}
                                    if args.pool_factor is not None else {}),
                                 **({"token_code": args.token_code} if args.token_code else {})),
        options=options, max_retries=args.max_retries, initial_backoff=args.retry_backoff,
    )
    client = config.client()
    try:
        if args.sparse_ann:  # refused before hours of encoding, not after
            from osneural.plugin.sparse_ann import SparseAnnUnavailable, check_cluster

            try:
                check_cluster(client)
            except SparseAnnUnavailable as exc:
                print(f"osneural ingest: --sparse-ann: {exc}", file=sys.stderr)
                return 2
        if args.from_index:
            from osneural.ingest.source_index import open_source

            corpus = open_source(client, args.from_index, fields)
        if args.ray is not None:
            from osneural.ingest.ray_ingest import ray_index_corpus

            summary = ray_index_corpus(
                config, corpus, args.index, address=None if args.ray == "local" else args.ray,
                workers=args.ray_workers, threads_per_worker=args.threads_per_worker,
                in_place=args.in_place, swap_alias=args.swap_alias, **common)
        else:
            summary = index_corpus(client, corpus, args.index, in_place=args.in_place,
                                   swap_alias=args.swap_alias, **common)
        if args.sparse_ann:
            from osneural.ingest.sparse_ann import build_sparse_ann
            from osneural.mappings.sparse_ann import SeismicParams

            ann = build_sparse_ann(client, args.index, SeismicParams(
                approximate_threshold=args.seismic_threshold, n_postings=args.seismic_n_postings))
            summary.notes.append(f"sparse ANN: {ann.written} documents in {ann.companion} "
                                 f"({ann.seconds:.1f} s, force-merged)")
    except IngestError as exc:
        print(f"osneural ingest: {exc}", file=sys.stderr)
        if exc.summary is not None and exc.summary.representations:
            # the progress made before the stop: what --resume will continue from
            print(json.dumps(exc.summary.to_dict(), indent=2) if args.json else exc.summary.format())
        return 2
    except (CorpusError, ValueError) as exc:
        print(f"osneural ingest: {exc}", file=sys.stderr)
        return 2
    except OSConnectionError as exc:
        print(f"osneural ingest: cannot reach OpenSearch at {config.describe()} "
              f"({connection_reason(exc)}); rerun with --resume when it is up", file=sys.stderr)
        return 2
    except TransportError as exc:
        print(f"osneural ingest: OpenSearch refused a request: {transport_reason(exc)}",
              file=sys.stderr)
        return 2
    finally:
        client.close()
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.format())
    return 1 if summary.failed else 0

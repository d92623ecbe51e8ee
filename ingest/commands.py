"""`osneural ingest CORPUS --index NAME ...`: the command-line face of `index_corpus`.

CORPUS is a JSONL file, a folder (BEIR layout or several JSONL files), or `sample` for the
built-in stdlib-docstrings corpus. Exit status: 0 all good, 1 some documents failed (see the
failure report), 2 nothing could be ingested (bad arguments, index mismatch, empty corpus,
cluster unreachable -- progress so far is kept and `--resume` continues).
"""

from __future__ import annotations

import argparse
import json
import sys

from osneural.connection import ClusterConfigError, add_cluster_arguments, client_from_args


def configure_ingest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", help="corpus.jsonl, a folder of JSONL files, or 'sample'")
    parser.add_argument("--index", required=True, help="target index name")
    parser.add_argument("--representations", default=None,
                        help="comma list of dense,sparse,binary,pq,multivector,float_tokens or "
                             "'all' (default for a new index: all but float_tokens, the float16 "
                             "token copies for exact MaxSim; an existing index keeps its own)")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per encode/bulk batch")
    parser.add_argument("--resume", action="store_true", help="skip ids already in the index")
    parser.add_argument("--id-field", default="_id")
    parser.add_argument("--title-field", default="title")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--failures", default=None,
                        help="failure report path (default: <corpus folder>/<index>.failures.jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N sample documents")
    parser.add_argument("--pool-factor", type=float, default=2, help="token pooling factor (1 = off)")
    parser.add_argument("--train-docs", type=int, default=2000, help="codec training sample size")
    parser.add_argument("--space-type", choices=("cosinesimil", "innerproduct"), default="cosinesimil")
    parser.add_argument("--engine", choices=("lucene", "faiss"), default="lucene",
                        help="k-NN engine (faiss needs the native libraries on the cluster)")
    parser.add_argument("--matryoshka", default="", help="comma list of extra dense_<dim> fields")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_cluster_arguments(parser)


def run_ingest(args: argparse.Namespace) -> int:
    from osneural.ingest.corpus import CorpusError, FieldNames
    from osneural.ingest.indexer import CodecParams, IngestError, index_corpus
    from osneural.ingest.sample import sample_corpus

    corpus = sample_corpus(args.limit) if args.corpus == "sample" else args.corpus
    try:
        mdims = [int(d) for d in args.matryoshka.split(",") if d.strip()]
    except ValueError:
        print(f"osneural ingest: --matryoshka must be integers, got {args.matryoshka!r}", file=sys.stderr)
        return 2
    try:
        client = client_from_args(args, timeout=120)
    except ClusterConfigError as exc:
        print(f"osneural ingest: {exc}", file=sys.stderr)
        return 2
    try:
        summary = index_corpus(
            client, corpus, args.index,
            representations=args.representations, batch_size=args.batch_size, resume=args.resume,
            fields=FieldNames(args.id_field, args.title_field, args.text_field),
            failure_report=args.failures, progress=not args.no_progress,
            codec_params=CodecParams(pool_factor=args.pool_factor, train_docs=args.train_docs),
            space_type=args.space_type, engine=args.engine, matryoshka_dims=mdims,
        )
    except (IngestError, CorpusError, ValueError) as exc:
        print(f"osneural ingest: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.format())
    return 1 if summary.failed else 0

"""Export the real default weights once per session and check the ONNX encoders against torch.

References are computed here with transformers + numpy (not with the exporter's wrapper modules),
so a pooling or masking mistake in the traced graph shows up as a parity failure.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")  # the export extra; installed in this project's venv
transformers = pytest.importorskip("transformers")

from osneural.encoders import (  # noqa: E402
    CheckpointError,
    DenseEncoder,
    EncoderError,
    EncoderInputError,
    MultiVectorEncoder,
    SparseEncoder,
    default_checkpoint,
    load_encoder,
    read_manifest,
)
from osneural.encoders.export import DEFAULT_DOC_TOP_K, export_model  # noqa: E402

pytestmark = pytest.mark.slow

TEXTS = [
    "Vitamin D deficiency is associated with a higher risk of respiratory infection.",
    "short",
    "Insulin resistance precedes type 2 diabetes by several years in most patients, and weight "
    "loss through diet and exercise restores insulin sensitivity in many of them.",
    "Café owners in Zürich sold 42 crêpes",
]

PAIRS = [  # (query, relevant passage, irrelevant passage)
    ("how do antibiotics treat bacterial infections",
     "Antibiotics kill bacteria or stop them from multiplying, which cures bacterial infections.",
     "The central bank raised interest rates to slow inflation and stock prices fell."),
    ("what is the capital of France",
     "Paris is the capital and largest city of France, on the river Seine.",
     "Photosynthesis converts light energy into chemical energy stored in glucose."),
    ("effects of smoking on lung cancer",
     "Tobacco smoking is the leading cause of lung cancer, damaging the cells lining the lungs.",
     "The football team won the championship after a penalty shootout in the final."),
]


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """kind -> folder; dense goes through the CLI so the command wiring is exercised too."""
    from osneural.cli import main

    root = tmp_path_factory.mktemp("encoders")
    out = {k: root / k for k in ("dense", "sparse", "multivector")}
    assert main(["export", "--kind", "dense", "--out", str(out["dense"]), "--quantize", "int8",
                 "--matryoshka-dims", "128,64"]) == 0
    export_model(default_checkpoint("sparse"), "sparse", out["sparse"])
    export_model(default_checkpoint("multivector"), "multivector", out["multivector"],
                 query_length=16)
    return out


def _tokenize(path, texts, max_length):
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    return tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def test_manifests_describe_the_exports(exported) -> None:
    dense = read_manifest(exported["dense"])
    assert dense["kind"] == "dense" and dense["dim"] == 384 and dense["pooling"] == "mean"
    assert dense["normalization"] == "l2" and dense["max_length"] == 256
    assert dense["matryoshka_dims"] == [128, 64] and dense["opset"] == 17
    assert dense["parity_max_abs_diff"] <= 1e-4
    assert len(dense["sha256"]) == 64 and dense["vocab_size"] == 30522
    assert dense["variants"]["int8"]["file"] == "model.int8.onnx"
    sparse = read_manifest(exported["sparse"])
    assert sparse["dim"] == 30522 and sparse["doc_top_k"] == DEFAULT_DOC_TOP_K == 160
    assert sparse["parity_max_abs_diff"] <= 1e-4
    mv = read_manifest(exported["multivector"])
    assert mv["query_max_length"] == 16 and mv["projection"] is None
    assert mv["parity_max_abs_diff"] <= 1e-4
    assert dense["sha256"] == mv["sha256"] != sparse["sha256"]  # same weights, different kinds


def test_graphs_are_plain_and_sparse_pooling_never_masks_the_logits(exported) -> None:
    """The export keeps the plain traced graph (onnxruntime fuses at load, without
    SkipLayerNormalization, whose CPU kernel is the slow one), and SPLADE's graph masks
    [batch, seq, hidden] rows, so no tensor with the vocabulary axis is multiplied by the mask:
    that pass was a quarter of the encoder's time."""
    import onnx

    for kind in ("dense", "sparse", "multivector"):
        graph = onnx.load(str(exported[kind] / "model.onnx")).graph
        ops = {n.op_type for n in graph.node}
        assert not ops & {"SkipLayerNormalization", "Attention", "BiasGelu",
                          "EmbedLayerNormalization"}, (kind, ops)
        assert read_manifest(exported[kind])["graph_fusion"] is None
    import onnxruntime as ort

    from osneural.encoders.runtime import SESSION_DISABLED_OPTIMIZERS

    assert "SkipLayerNormFusion" in SESSION_DISABLED_OPTIMIZERS
    # the sparse graph's tensors with the vocabulary axis: only the head's output and the max
    model = onnx.shape_inference.infer_shapes(onnx.load(str(exported["sparse"] / "model.onnx")))
    vocab = 30522
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    wide = {n.op_type for n in model.graph.node
            if any(vocab in shapes.get(o, []) and len(shapes.get(o, [])) == 3 for o in n.output)}
    assert "Mul" not in wide and "Where" not in wide, wide
    # ... and with the projection in chunks, no [batch, seq, vocab] tensor at all: each chunk's
    # logits are reduced over the sequence before the next chunk is projected
    assert not wide, wide
    from osneural.encoders.export import VOCAB_CHUNK

    assert read_manifest(exported["sparse"])["vocab_chunk"] == VOCAB_CHUNK < vocab
    ort.InferenceSession(str(exported["sparse"] / "model.onnx"),
                         providers=["CPUExecutionProvider"],
                         disabled_optimizers=SESSION_DISABLED_OPTIMIZERS)


def test_dense_matches_torch_on_a_padded_batch(exported) -> None:
    src = default_checkpoint("dense")
    model = transformers.AutoModel.from_pretrained(str(src)).eval()
    batch = _tokenize(src, TEXTS, 256)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()[..., None].astype(np.float32)
    ref = (hidden * mask).sum(1) / mask.sum(1)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    enc = load_encoder(exported["dense"])
    got = enc.encode_documents(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    assert np.max(np.abs(got - ref)) <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Matryoshka: the first 128 dims, renormalised
    small = DenseEncoder(exported["dense"], dim=128).encode_documents(TEXTS)
    cut = ref[:, :128] / np.linalg.norm(ref[:, :128], axis=1, keepdims=True)
    assert np.max(np.abs(small - cut)) <= 1e-4


def test_sparse_matches_torch_on_a_padded_batch(exported) -> None:
    src = default_checkpoint("sparse")
    model = transformers.AutoModelForMaskedLM.from_pretrained(str(src)).eval()
    batch = _tokenize(src, TEXTS, 256)
    with torch.no_grad():
        logits = model(**batch).logits.numpy()
    mask = batch["attention_mask"].numpy()[..., None]
    ref = (np.log1p(np.maximum(logits, 0)) * mask).max(axis=1)
    # the raw graph on the same padded batch
    enc = SparseEncoder(exported["sparse"], doc_top_k=0)
    raw = enc.session.run(None, {"input_ids": batch["input_ids"].numpy(),
                                 "attention_mask": batch["attention_mask"].numpy()})[0]
    assert raw.shape == ref.shape and np.max(np.abs(raw - ref)) <= 1e-4
    # the runtime's dicts (its own length-sorted batching) hold the same weights
    for row, terms in zip(ref, enc.encode_documents(TEXTS), strict=True):
        ids = [enc.tokenizer.token_to_id(t) for t in terms]
        np.testing.assert_allclose([terms[t] for t in terms], row[ids], atol=1e-4)
        assert set(np.flatnonzero(row > 1e-4).tolist()) <= set(ids)  # nothing non-zero dropped
    # one text per run (every query): the graph splits each text in two halves of ceil(seq/2)
    # rows, overlapping by one when seq is odd; both parities give the textbook max
    parities = set()
    for text in [*TEXTS, "vitamin d", "vitamin d and flu"]:
        one = _tokenize(src, [text], 256)
        parities.add(one["input_ids"].shape[1] % 2)
        with torch.no_grad():
            want = np.log1p(np.maximum(model(**one).logits.numpy(), 0)).max(axis=1)
        got = enc.session.run(None, {k: one[k].numpy() for k in ("input_ids", "attention_mask")})[0]
        assert got.shape == want.shape == (1, ref.shape[1]), text
        assert np.max(np.abs(got - want)) <= 1e-4, text
    assert parities == {0, 1}
    top = SparseEncoder(exported["sparse"]).encode_documents(TEXTS)
    assert all(0 < len(t) <= 256 for t in top)
    weights = list(top[2].values())
    assert weights == sorted(weights, reverse=True) and min(weights) > 0


def test_sparse_terms_are_related_words(exported) -> None:
    enc = load_encoder(exported["sparse"])
    terms = enc.encode_documents(["The patient was treated with antibiotics for a bacterial infection."])[0]
    top = list(terms)[:12]
    assert {"antibiotics", "infection", "bacteria"} <= set(top)


def test_multivector_matches_torch_on_a_padded_batch(exported) -> None:
    src = default_checkpoint("multivector")
    model = transformers.AutoModel.from_pretrained(str(src)).eval()
    batch = _tokenize(src, TEXTS, 256)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.numpy()
    ref = hidden / np.linalg.norm(hidden, axis=-1, keepdims=True)
    enc = MultiVectorEncoder(exported["multivector"])
    docs = enc.encode_documents(TEXTS)
    for i, doc in enumerate(docs):
        ids = batch["input_ids"][i][batch["attention_mask"][i].bool()].numpy()
        keep = ~enc.skip[ids]
        assert doc.shape == (int(keep.sum()), 384)
        assert np.max(np.abs(doc - ref[i, : len(ids)][keep])) <= 1e-4
        np.testing.assert_allclose(np.linalg.norm(doc, axis=1), 1.0, atol=1e-5)
    # the comma-free text keeps every token, [CLS] and [SEP] included; punctuation is dropped
    tokens = enc.tokenizer.encode("Café owners in Zürich sold 42 crêpes").tokens
    assert docs[3].shape[0] == len(tokens)
    assert docs[0].shape[0] == len(enc.tokenizer.encode(TEXTS[0]).ids) - 1  # the final "."
    # MiniLM has no ColBERT projection: queries are not [MASK]-expanded, only truncated.
    assert enc.query_expansion is False
    queries = enc.encode_queries(["what is vitamin d", "x " * 40])
    assert [q.shape for q in queries] == [(6, 384), (16, 384)]  # [CLS] 4 wordpieces [SEP]
    assert enc.last_stats.truncated == 1 and enc.last_stats.truncated_indices == [1]


@pytest.mark.parametrize("kind", ["dense", "sparse", "multivector"])
def test_relevant_passage_scores_higher(exported, kind) -> None:
    enc = load_encoder(exported[kind])
    for query, good, bad in PAIRS:
        q = enc.encode_queries([query])[0]
        d_good, d_bad = enc.encode_documents([good, bad])
        if kind == "dense":
            s_good, s_bad = float(q @ d_good), float(q @ d_bad)
        elif kind == "sparse":
            s_good = sum(w * d_good.get(t, 0.0) for t, w in q.items())
            s_bad = sum(w * d_bad.get(t, 0.0) for t, w in q.items())
        else:
            s_good = float((q @ d_good.T).max(axis=1).sum())
            s_bad = float((q @ d_bad.T).max(axis=1).sum())
        assert s_good > s_bad, (kind, query, s_good, s_bad)


def test_inference_free_queries_use_idf_only(exported) -> None:
    corpus = [good for _, good, _ in PAIRS] + [bad for _, _, bad in PAIRS]
    enc = SparseEncoder(exported["sparse"], query_mode="inference_free")
    assert enc.encode_queries(["Antibiotics cure infections"]) == [
        {"antibiotics": 1.0, "cure": 1.0, "infections": 1.0}]
    table = enc.fit_idf(corpus)
    weights = table.weights()
    q = enc.encode_queries(["the capital of France"])[0]
    tok = enc.tokenizer
    assert set(q) == {"the", "capital", "of", "france"}
    for term, w in q.items():
        assert w == pytest.approx(float(weights[tok.token_to_id(term)]))
    assert q["france"] > q["the"]  # "the" occurs in more documents
    # a dict round trip (what ingestion stores in OpenSearch) gives the same weights
    other = SparseEncoder(exported["sparse"], query_mode="inference_free",
                          idf=json.loads(json.dumps(enc.idf_to_dict())))
    assert other.encode_queries(["the capital of France"])[0] == q
    # relevance still holds with document-side expansion only
    for query, good, bad in PAIRS:
        qv = enc.encode_queries([query])[0]
        d_good, d_bad = enc.encode_documents([good, bad])
        assert sum(w * d_good.get(t, 0) for t, w in qv.items()) > \
            sum(w * d_bad.get(t, 0) for t, w in qv.items())


@pytest.mark.parametrize("kind", ["dense", "sparse", "multivector"])
def test_empty_long_and_invalid_texts(exported, kind) -> None:
    enc = load_encoder(exported[kind])
    out = enc.encode_documents(["", "   \n\t", "fine text", "word " * 600])
    assert enc.last_stats.empty == 2 and enc.last_stats.truncated == 1
    assert enc.last_stats.truncated_indices == [3]
    before = enc.truncated_count
    enc.encode_documents(["word " * 600])
    assert enc.truncated_count == before + 1
    if kind == "dense":
        assert np.all(out[:2] == 0) and np.isfinite(out).all()
    elif kind == "sparse":
        assert out[0] == {} and out[1] == {} and len(out[3]) > 0
        assert all(np.isfinite(v) for d in out for v in d.values())
    else:
        assert out[0].shape == (0, 384) and out[1].shape == (0, 384)
        assert out[3].shape[0] <= 256 and np.isfinite(out[3]).all()
    with pytest.raises(EncoderInputError, match="text #1 is not valid UTF-8"):
        enc.encode_documents(["ok", b"\xc3\x28"])


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_one_encoder_is_safe_to_share_between_threads(exported, kind) -> None:
    """A query node encodes concurrent queries with one encoder: long texts (truncated) and short
    ones from 8 threads come out exactly as they do one call at a time."""
    import concurrent.futures as cf

    enc = load_encoder(exported[kind], intra_op_threads=1)
    texts = [("word " * 600) + str(i) if i % 2 else f"short text {i}" for i in range(32)]
    serial = [enc.encode_documents([t]) for t in texts]
    with cf.ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            together = list(pool.map(lambda t: enc.encode_documents([t]), texts))
            for a, b in zip(serial, together, strict=True):
                if kind == "dense":
                    assert np.array_equal(a, b)
                else:
                    assert a == b


@pytest.mark.parametrize("kind", ["dense", "sparse", "multivector"])
def test_concurrent_streams_give_the_serial_result(exported, kind) -> None:
    """Batches run as concurrent one-thread streams by default: the same batches as one
    stream, so the same numbers (dynamic int8 quantization included)."""
    texts = [("passage " * (7 * i + 3)) + str(i) for i in range(40)]
    serial = load_encoder(exported[kind], intra_op_threads=1, max_batch_tokens=256)
    streamed = load_encoder(exported[kind], streams=3, max_batch_tokens=256)
    assert serial.streams == 1 and streamed.streams == 3
    a, b = serial.encode_documents(texts), streamed.encode_documents(texts)
    assert serial.last_stats.tokens == streamed.last_stats.tokens > 0
    if kind == "dense":
        assert np.array_equal(a, b)
    elif kind == "sparse":
        assert a == b
    else:
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(EncoderError, match="streams must be at least 1"):
        load_encoder(exported[kind], streams=0)


def test_int8_variant_is_close_and_loadable(exported) -> None:
    fp32 = load_encoder(exported["dense"])
    int8 = load_encoder(exported["dense"], precision="int8", intra_op_threads=1)
    a, b = fp32.encode_documents(TEXTS), int8.encode_documents(TEXTS)
    cos = np.sum(a * b, axis=1)
    assert cos.min() > 0.98
    diff = read_manifest(exported["dense"])["variants"]["int8"]["parity_max_abs_diff_vs_fp32"]
    assert 0 < diff < 0.2


def test_query_encoders_in_int8_on_request(exported, tmp_path, monkeypatch) -> None:
    """`OSNEURAL_QUERY_PRECISION=int8` (or `EncoderCache(precision=...)`) loads the int8 variant
    of the default export; an export without one is refused with the command that makes it."""
    from osneural.plugin.resources import EncoderCache, query_encoder_precision

    from osneural.encoders.defaults import DEFAULT_DIRS
    from osneural.encoders.errors import ModelNotFoundError

    models = tmp_path / "models"
    models.mkdir()
    (models / DEFAULT_DIRS["dense"]).symlink_to(exported["dense"])
    (models / DEFAULT_DIRS["sparse"]).symlink_to(exported["sparse"])  # exported without int8
    monkeypatch.setenv("OSNEURAL_MODELS", str(models))
    monkeypatch.setenv("OSNEURAL_QUERY_PRECISION", "int8")
    assert query_encoder_precision() == "int8"
    cache = EncoderCache()
    q8 = cache.get("dense")
    assert q8.precision == "int8"
    fp32 = EncoderCache(precision="fp32").get("dense")
    a, b = fp32.encode_queries(TEXTS), q8.encode_queries(TEXTS)
    assert not np.array_equal(a, b) and np.sum(a * b, axis=1).min() > 0.98
    assert q8.sha256 == fp32.sha256  # the index's encoder check accepts either
    with pytest.raises(ModelNotFoundError, match="--quantize int8"):
        cache.get("sparse")
    monkeypatch.setenv("OSNEURAL_QUERY_PRECISION", "fp16")
    with pytest.raises(ValueError, match="OSNEURAL_QUERY_PRECISION"):
        EncoderCache()


def test_int8_is_the_default_where_exported_and_fp32_one_setting_away(
        exported, tmp_path, monkeypatch, caplog) -> None:
    """With no setting, dense and sparse encoders (queries and documents) run in int8 when the
    export has its int8 file; an export without it runs in fp32 with one log line, never an
    error; multivector too, queries and documents; `fp32` restores the
    old behaviour. `osneural export` on an fp32-only default export adds the int8 variant."""
    import logging
    import shutil

    from osneural.ingest.batch import load_encoders
    from osneural.plugin.resources import EncoderCache

    from osneural.cli import main
    from osneural.encoders.defaults import DEFAULT_DIRS

    models = tmp_path / "models"
    models.mkdir()
    (models / DEFAULT_DIRS["dense"]).symlink_to(exported["dense"])  # exported with int8
    shutil.copytree(exported["sparse"], models / DEFAULT_DIRS["sparse"])  # without int8
    shutil.copytree(exported["multivector"], models / DEFAULT_DIRS["multivector"])  # fp32 only
    monkeypatch.setenv("OSNEURAL_MODELS", str(models))
    monkeypatch.delenv("OSNEURAL_QUERY_PRECISION", raising=False)
    monkeypatch.delenv("OSNEURAL_DOCUMENT_PRECISION", raising=False)
    with caplog.at_level(logging.WARNING, logger="osneural.encoders"):
        cache = EncoderCache()
        assert cache.precision == "auto"
        assert cache.get("dense").precision == "int8"
        assert cache.get("sparse").precision == "fp32"  # no int8 file: fp32, not an error
        assert cache.get("multivector").precision == "fp32"  # no int8 file yet
    assert any("has no model.int8.onnx" in r.getMessage() and "sparse" in r.getMessage()
               for r in caplog.records)
    docs = load_encoders(["dense", "sparse", "multivector"])
    assert docs["dense"].precision == "int8" and docs["sparse"].precision == "fp32"
    assert docs["multivector"].precision == "fp32"  # no int8 file yet
    # the default export adds the multivector's int8 variant; documents and queries use it
    assert main(["export", "--kind", "multivector"]) == 0
    docs = load_encoders(["dense", "multivector"])
    assert docs["multivector"].precision == "int8"
    assert docs["multivector"].shares_dense_pass(docs["dense"])  # one int8 pass serves both
    queries = EncoderCache()
    assert queries.get("multivector").precision == "int8"
    assert queries.get("multivector").shares_query_pass(queries.get("dense"))
    monkeypatch.setenv("OSNEURAL_DOCUMENT_PRECISION", "fp32")
    assert load_encoders(["dense"])["dense"].precision == "fp32"
    monkeypatch.setenv("OSNEURAL_QUERY_PRECISION", "fp32")
    assert EncoderCache().get("dense").precision == "fp32"

    # the default export command adds the int8 variant to the fp32-only export, keeping the rest
    sparse = models / DEFAULT_DIRS["sparse"]
    before = (sparse / "model.onnx").read_bytes()
    assert main(["export", "--kind", "sparse"]) == 0
    assert (sparse / "model.int8.onnx").is_file() and (sparse / "model.onnx").read_bytes() == before
    assert "int8" in read_manifest(sparse)["variants"]
    monkeypatch.delenv("OSNEURAL_QUERY_PRECISION")
    assert EncoderCache().get("sparse").precision == "int8"


def test_runtime_does_not_import_torch(exported) -> None:
    import subprocess

    code = (
        "import sys\n"
        "from osneural.encoders import load_encoder\n"
        f"e = load_encoder({str(exported['sparse'])!r})\n"
        "e.encode_documents(['hello world'])\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False False"


# -- ColBERT-layout checkpoints ------------------------------------------------------------


def _minilm_copy(dst):
    src = default_checkpoint("dense")
    dst.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        shutil.copyfile(src / name, dst / name)
    return src


def _projection(seed=0):
    return np.random.default_rng(seed).standard_normal((128, 384)).astype(np.float32) / 20


def _reference_tokens(src, text, weight):
    model = transformers.AutoModel.from_pretrained(str(src)).eval()
    batch = _tokenize(src, [text], 256)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.numpy()[0]
    proj = hidden @ weight.T
    return proj / np.linalg.norm(proj, axis=1, keepdims=True)


def test_multivector_pass_also_yields_the_dense_vector(exported) -> None:
    dense = load_encoder(exported["dense"])
    multi = load_encoder(exported["multivector"])
    assert multi.has_pooled_output and multi.shares_dense_pass(dense)
    texts = ["Statins lower LDL cholesterol.", "", "A " + "long sentence " * 300]
    tokens, pooled = multi.encode_documents_and_pooled(texts)
    assert np.max(np.abs(pooled - dense.encode_documents(texts))) <= 1e-5
    assert not pooled[1].any() and tokens[1].shape == (0, 384)  # empty text: zero, like dense
    for got, want in zip(tokens, multi.encode_documents(texts), strict=True):
        assert np.array_equal(got, want)
    # A cut Matryoshka dense encoder is not the same vector: the shared pass must not claim it.
    assert not multi.shares_dense_pass(load_encoder(exported["dense"], dim=128))


def test_pylate_layout_exports_and_loads(tmp_path) -> None:
    from safetensors.numpy import save_file

    ck = tmp_path / "pylate"
    src = _minilm_copy(ck)
    os.symlink(src / "model.safetensors", ck / "model.safetensors")
    (ck / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]))
    (ck / "config_sentence_transformers.json").write_text(json.dumps(
        {"query_length": 24, "document_length": 128, "attend_to_expansion_tokens": False}))
    (ck / "1_Dense").mkdir()
    (ck / "1_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 384, "out_features": 128, "bias": False,
         "activation_function": "torch.nn.modules.linear.Identity"}))
    weight = _projection(1)
    save_file({"linear.weight": weight}, str(ck / "1_Dense" / "model.safetensors"))

    manifest = export_model(ck, "multivector", tmp_path / "out")
    assert manifest["dim"] == 128 and manifest["projection"]["out_features"] == 128
    assert "sentence_embedding" not in manifest["outputs"]  # projected tokens: no shared pass
    assert manifest["query_max_length"] == 24 and manifest["max_length"] == 128
    assert manifest["parity_max_abs_diff"] <= 1e-4
    enc = load_encoder(tmp_path / "out")
    text = "Insulin resistance precedes type 2 diabetes"
    doc = enc.encode_documents([text])[0]
    ref = _reference_tokens(src, text, weight)
    assert doc.shape == ref.shape == (len(enc.tokenizer.encode(text).ids), 128)
    assert np.max(np.abs(doc - ref)) <= 1e-4
    assert enc.encode_queries(["insulin"])[0].shape == (24, 128)


def test_original_colbert_layout_exports_and_loads(tmp_path) -> None:
    from safetensors.numpy import load_file, save_file

    ck = tmp_path / "colbert"
    src = _minilm_copy(ck)
    config = json.loads((ck / "config.json").read_text())
    config["architectures"] = ["HF_ColBERT"]
    (ck / "config.json").write_text(json.dumps(config))
    weights = {f"bert.{k}": v for k, v in load_file(str(src / "model.safetensors")).items()}
    weight = _projection(2)
    weights["linear.weight"] = weight
    save_file(weights, str(ck / "model.safetensors"))

    manifest = export_model(ck, "multivector", tmp_path / "out")
    assert manifest["dim"] == 128 and manifest["projection"]["file"] == "model.safetensors"
    enc = load_encoder(tmp_path / "out")
    text = "Vitamin D and respiratory infection"
    doc = enc.encode_documents([text])[0]
    ref = _reference_tokens(src, text, weight)
    assert doc.shape == (ref.shape[0], 128) and np.max(np.abs(doc - ref)) <= 1e-4


def test_unusable_checkpoints_get_clear_errors(tmp_path) -> None:
    ck = tmp_path / "mystery"
    _minilm_copy(ck)
    os.symlink(default_checkpoint("dense") / "model.safetensors", ck / "model.safetensors")
    config = json.loads((ck / "config.json").read_text())
    (ck / "config.json").write_text(json.dumps({**config, "model_type": "no-such-model"}))
    with pytest.raises(CheckpointError, match="unknown architecture"):
        export_model(ck, "dense", tmp_path / "out1")
    (ck / "config.json").write_text(json.dumps(config))
    # MiniLM has no masked-language-model head: a sparse export must refuse it
    with pytest.raises(CheckpointError, match="masked-language-model head"):
        export_model(ck, "sparse", tmp_path / "out2")
    for name in ("tokenizer.json", "vocab.txt"):
        (ck / name).unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        export_model(ck, "dense", tmp_path / "out3")


def test_ensure_and_load_default(tmp_path, monkeypatch) -> None:
    from osneural.encoders import ensure_default_models, load_default

    monkeypatch.setenv("OSNEURAL_MODELS", str(tmp_path))
    paths = ensure_default_models(["sparse"])
    assert paths == {"sparse": tmp_path / "splade-tiny"}
    stamp = (paths["sparse"] / "model.onnx").stat().st_mtime_ns
    assert ensure_default_models(["sparse"]) == paths  # present: not exported again
    assert (paths["sparse"] / "model.onnx").stat().st_mtime_ns == stamp
    enc = load_default("sparse", batch_size=4)
    assert isinstance(enc, SparseEncoder) and enc.encode_documents(["insulin"])[0]
    assert (paths["sparse"] / "model.int8.onnx").is_file() and enc.precision == "int8"  # the default


def test_export_command_reports_bad_checkpoints(tmp_path, capsys) -> None:
    from osneural.cli import main

    code = main(["export", "--kind", "sparse", "--model", str(default_checkpoint("dense")),
                 "--out", str(tmp_path / "x")])
    assert code == 1
    assert "masked-language-model head" in capsys.readouterr().err


def test_an_older_sparse_export_moves_to_the_new_term_cap(exported, tmp_path, monkeypatch,
                                                            capsys) -> None:
    """`osneural export` on a default sparse export written with the old cap (256 terms per
    document) rewrites only the manifest's cap, and the encoder then keeps DEFAULT_DOC_TOP_K
    terms; a cap its user chose, and any other kind, is left alone."""
    from osneural.cli import main
    from osneural.encoders.defaults import DEFAULT_DIRS
    from osneural.encoders.export import PREVIOUS_DOC_TOP_K

    monkeypatch.setenv("OSNEURAL_MODELS", str(tmp_path))
    folder = tmp_path / DEFAULT_DIRS["sparse"]
    shutil.copytree(exported["sparse"], folder)
    manifest = read_manifest(folder)
    manifest["doc_top_k"] = PREVIOUS_DOC_TOP_K
    (folder / "manifest.json").write_text(json.dumps(manifest))
    model_bytes = (folder / "model.onnx").read_bytes()
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    words = sorted(w for w in vocab if w.isalpha() and len(w) > 4)[::40][:250]
    text = " ".join(words)  # 250 distinct words: more non-zero terms than either cap
    assert len(SparseEncoder(folder).encode_documents([text])[0]) > DEFAULT_DOC_TOP_K

    assert main(["export", "--kind", "sparse"]) == 0
    assert f"documents now keep the top {DEFAULT_DOC_TOP_K}" in capsys.readouterr().out
    assert read_manifest(folder)["doc_top_k"] == DEFAULT_DOC_TOP_K
    assert (folder / "model.onnx").read_bytes() == model_bytes
    assert len(SparseEncoder(folder).encode_documents([text])[0]) == DEFAULT_DOC_TOP_K

    manifest["doc_top_k"] = 300  # chosen by its user
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert main(["export", "--kind", "sparse"]) == 0
    assert "already exported" in capsys.readouterr().out
    assert read_manifest(folder)["doc_top_k"] == 300


def test_a_sparse_export_without_the_chunked_projection_is_re_exported(
        exported, tmp_path, monkeypatch, capsys) -> None:
    """`osneural export` on a default sparse export from before the chunked vocabulary
    projection (no `vocab_chunk` in its manifest) exports it again: the same weights and term
    weights from the faster graph, the term cap its user chose kept."""
    from osneural.cli import main
    from osneural.encoders.defaults import DEFAULT_DIRS
    from osneural.encoders.export import VOCAB_CHUNK

    monkeypatch.setenv("OSNEURAL_MODELS", str(tmp_path))
    folder = tmp_path / DEFAULT_DIRS["sparse"]
    shutil.copytree(exported["sparse"], folder)
    manifest = read_manifest(folder)
    del manifest["vocab_chunk"]
    manifest["doc_top_k"] = 300  # chosen by its user
    (folder / "manifest.json").write_text(json.dumps(manifest))
    before = SparseEncoder(exported["sparse"], doc_top_k=0).encode_documents(TEXTS)

    assert main(["export", "--kind", "sparse"]) == 0
    assert "re-exporting" in capsys.readouterr().out
    fresh = read_manifest(folder)
    assert fresh["vocab_chunk"] == VOCAB_CHUNK and fresh["doc_top_k"] == 300
    assert fresh["sha256"] == manifest["sha256"] and "int8" in fresh["variants"]
    after = SparseEncoder(folder, doc_top_k=0, precision="fp32").encode_documents(TEXTS)
    for a, b in zip(before, after, strict=True):
        assert a.keys() == b.keys()
        assert max(abs(a[t] - b[t]) for t in a) <= 1e-5
    assert main(["export", "--kind", "sparse"]) == 0
    assert "already exported" in capsys.readouterr().out


def test_the_vocabulary_projection_is_split_only_where_the_split_is_the_head() -> None:
    """The chunked sparse graph reads the head as (everything before `decoder`) then `decoder`;
    a head that does anything after its decoder keeps the whole projection."""
    from osneural.encoders.export import _split_vocab_projection

    model = transformers.AutoModelForMaskedLM.from_pretrained(str(default_checkpoint("sparse")))
    features, weight, bias = _split_vocab_projection(model.cls)
    x = torch.randn(1, 5, weight.shape[1])
    with torch.no_grad():
        np.testing.assert_allclose((features(x) @ weight.t() + bias).numpy(),
                                   model.cls(x).numpy(), atol=1e-4)

    class Scaled(torch.nn.Module):  # a decoder whose output the head still changes
        def __init__(self) -> None:
            super().__init__()
            self.dense = torch.nn.Linear(8, 8)
            self.decoder = torch.nn.Linear(8, 20)

        def forward(self, x):
            return self.decoder(torch.tanh(self.dense(x))) * 2.0

    class NoDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out = torch.nn.Linear(8, 20)

        def forward(self, x):
            return self.out(x)

    assert _split_vocab_projection(Scaled()) is None
    assert _split_vocab_projection(NoDecoder()) is None

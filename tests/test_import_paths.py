"""Encoders and codecs moved beside ingest/plugin/eval; the old `osneural.ingest.*` paths still import."""

import importlib


def test_old_encoder_and_codec_paths_give_the_same_objects():
    import osneural.codecs.pq as new_pq
    import osneural.encoders.runtime as new_runtime

    old_runtime = importlib.import_module("osneural.ingest.encoders.runtime")
    old_pq = importlib.import_module("osneural.ingest.codecs.pq")
    assert old_runtime is new_runtime
    assert old_pq is new_pq
    from osneural.ingest.codecs import ProductQuantizer
    from osneural.ingest.encoders import DenseEncoder

    assert ProductQuantizer is new_pq.ProductQuantizer
    assert DenseEncoder is new_runtime.DenseEncoder

"""The embedding interface: the local model (offline, normalized, batched) and the production client for Text
Embeddings Inference, checked against a TEI-shaped HTTP endpoint backed by the same real model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from knowledge.embeddings import LocalEmbedder, TEIEmbedder, default_model_path, get_embedder, reset_embedders

TEXTS = [
    "Employees book trains for short trips.",
    "Hotels are reimbursed up to 150 euros.",
    "Laptops last three years.",
]


def test_local_embedder_is_offline_normalized_and_a_singleton():
    embedder = get_embedder()
    assert get_embedder() is embedder and isinstance(embedder, LocalEmbedder)
    vectors = np.asarray(embedder.embed(TEXTS))
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # batching does not change the result
    one_by_one = np.concatenate([embedder.embed_array([t], batch_size=1) for t in TEXTS])
    assert np.allclose(vectors, one_by_one, atol=1e-5)
    # meaning: the train sentence is closer to a rail question than the laptop one
    query = np.asarray(embedder.embed(["rail travel"])[0])
    assert query @ vectors[0] > query @ vectors[2]


def test_local_token_vectors_are_each_token_in_context_with_its_place_in_the_text():
    embedder = get_embedder()
    text = "May I plug my own memory stick into my laptop?"
    [tokens] = embedder.token_vectors([text])
    assert tokens.vectors.shape == (len(tokens.spans), 384)
    assert np.allclose(np.linalg.norm(tokens.vectors, axis=1), 1.0, atol=1e-5)
    pieces = [text[start:end] for start, end in tokens.spans]
    assert "".join(pieces) == text.replace(" ", "")  # every character once, no [CLS] or [SEP]
    words = "Private USB storage devices may not be connected to company laptops."
    [passage] = embedder.token_vectors([words])

    def closest(piece: str) -> str:
        start, end = passage.spans[int(np.argmax(passage.vectors @ tokens.vectors[pieces.index(piece)]))]
        return words[start:end]

    # in context, the question's words find their paraphrases in the passage
    assert closest("memory") == "storage"
    assert closest("plug") in {"USB", "connected"}
    assert closest("stick") in {"USB", "storage", "devices"}


def test_local_token_vectors_stop_where_the_model_stops_reading():
    embedder = get_embedder()
    long = " ".join(["allowance"] * 600)
    [tokens] = embedder.token_vectors([long])
    assert len(tokens.spans) == embedder.model.max_seq_length - 2  # [CLS] and [SEP] dropped


@pytest.fixture
def tei_server():
    """A TEI-compatible endpoint (POST {"inputs": [...], "normalize": ..., "truncate": ...} → list of vectors)
    computing real embeddings with the local model, recording what the client sent."""
    model = LocalEmbedder(model_id="tei-backend", path=default_model_path(), dimension=384)
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, **body})
            inputs = body["inputs"] if isinstance(body["inputs"], list) else [body["inputs"]]
            vectors = model.embed_array(inputs) * 3.0  # unnormalized on purpose when normalize is false
            if body.get("normalize", True):
                vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            payload = json.dumps(vectors.tolist()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_tei_client_batches_and_normalizes(tei_server, settings):
    url, seen = tei_server
    settings.TEI_URL = url
    reset_embedders()
    try:
        embedder = get_embedder()
        assert isinstance(embedder, TEIEmbedder)
        embedder.batch_size = 2
        remote = np.asarray(embedder.embed(TEXTS))
        assert embedder.token_vectors(TEXTS) is None  # TEI pools on the server: no token vectors, no request
    finally:
        reset_embedders()
    local = np.asarray(LocalEmbedder(model_id="local", path=default_model_path(), dimension=384).embed(TEXTS))
    assert np.allclose(remote, local, atol=1e-4)
    assert [len(call["inputs"]) for call in seen] == [2, 1]
    assert all(call["normalize"] is True and call["truncate"] is True for call in seen)


def test_tei_with_hub_offline_mode_is_a_clear_configuration_error(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ImproperlyConfigured, match="HF_HUB_OFFLINE is set"):
        TEIEmbedder(model_id="x", url="http://127.0.0.1:9", dimension=384)

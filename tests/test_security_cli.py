"""Every command that talks to a cluster (ingest, search, eval, demo, serve) against the TLS +
basic-auth front (issue #12): credentials from flags, from the environment and from a
`user:password@` URL; the test CA through `--ca-certs` (flag or env) or `--insecure`; and the
password never echoed, in success or failure. The front's access log shows which user each
command's requests reached the upstream as.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from tls_front import USERS

pytestmark = pytest.mark.integration

PW = USERS["alice"]
OSNEURAL = [sys.executable, "-m", "osneural.cli"]
DOCS = [(f"d{i:02d}", t) for i, t in enumerate([
    "heart disease and blood pressure", "gene expression in tumor cells", "vaccine immune response",
    "sleep and bone density", "insulin resistance in diet studies", "brain imaging of memory",
    "lung cancer screening trial", "protein folding with drugs", "virus spread in mice",
    "blood sugar and insulin", "tumor growth factor genes", "immune cells fight virus",
] * 2)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSNEURAL_OPENSEARCH")}
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str] | None = None, timeout: int = 300):
    proc = subprocess.run(OSNEURAL + args, env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    assert PW not in out and USERS["svc"] not in out, "a password was echoed"
    return proc.returncode, proc.stdout, proc.stderr


def _userinfo_url(front, user: str = "alice", password: str = PW) -> str:
    from urllib.parse import quote

    return f"https://{user}:{quote(password, safe='')}@127.0.0.1:{front.port}"


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("beir-mini")
    with open(folder / "corpus.jsonl", "w") as fh:
        for i, (doc_id, text) in enumerate(DOCS):
            fh.write(json.dumps({"_id": f"{doc_id}-{i}", "title": "", "text": text}) + "\n")
    (folder / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "insulin"}) + "\n" + json.dumps({"_id": "q2", "text": "virus"}) + "\n")
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td04-4\t1\nq1\td09-9\t1\nq2\td08-8\t1\nq2\td11-11\t1\n")
    return folder


@pytest.fixture(scope="module")
def cli_index(tls_front, beir, opensearch_client):
    """The mini corpus ingested through the front with --user/--password flags and --ca-certs."""
    name = f"test-sec-cli-{uuid.uuid4().hex[:8]}"
    mark = tls_front.log_mark()
    rc, out, err = _run(["ingest", str(beir / "corpus.jsonl"), "--index", name,
                         "--representations", "dense", "--no-progress",
                         "--url", tls_front.url, "--user", "alice", "--password", PW,
                         "--ca-certs", str(tls_front.ca)])
    assert rc == 0, out + err
    users = {u for u, *_ in tls_front.requests_since(mark)}
    assert users == {"alice"}, users
    opensearch_client.indices.refresh(index=name)
    assert opensearch_client.count(index=name)["count"] == len(DOCS)
    yield name
    opensearch_client.indices.delete(index=name, ignore_unavailable=True)
    opensearch_client.delete(index="osneural-codecs", id=name, ignore=404)


def test_search_with_env_credentials_and_env_ca(tls_front, cli_index):
    env = _env(OSNEURAL_OPENSEARCH_URL=tls_front.url, OSNEURAL_OPENSEARCH_USER="alice",
               OSNEURAL_OPENSEARCH_PASSWORD=PW, OSNEURAL_OPENSEARCH_CA_CERTS=str(tls_front.ca))
    rc, out, err = _run(["search", "--index", cli_index, "--spec", "bm25", "insulin"], env)
    assert rc == 0, err
    ids = [h["_id"] for h in json.loads(out)["hits"]["hits"]]
    assert {"d04-4", "d09-9"} <= set(ids)


def test_search_with_url_credentials_and_insecure(tls_front, cli_index):
    rc, out, err = _run(["search", "--index", cli_index, "--spec", "bm25", "virus",
                         "--url", _userinfo_url(tls_front), "--insecure"])
    assert rc == 0, err
    assert json.loads(out)["hits"]["hits"]


def test_failures_are_one_clear_line_without_the_password(tls_front, cli_index):
    # wrong password: the cluster's 401, named
    rc, out, err = _run(["search", "--index", cli_index, "--spec", "bm25", "x", "--url", tls_front.url,
                         "--user", "alice", "--password", "not-" + PW, "--ca-certs", str(tls_front.ca)])
    assert rc == 1 and "401" in err and "not-" + PW not in out + err
    # no CA and no --insecure: the certificate is refused
    rc, out, err = _run(["search", "--index", cli_index, "--spec", "bm25", "x",
                         "--url", _userinfo_url(tls_front)])
    assert rc != 0 and "certificate" in err.lower() and "Traceback" not in err
    # ingest with a wrong password through the environment
    env = _env(OSNEURAL_OPENSEARCH_URL=tls_front.url, OSNEURAL_OPENSEARCH_USER="alice",
               OSNEURAL_OPENSEARCH_PASSWORD="bad-" + PW, OSNEURAL_OPENSEARCH_INSECURE="true")
    rc, out, err = _run(["ingest", "sample", "--limit", "2", "--index", cli_index + "-x",
                         "--representations", "dense", "--no-progress"], env)
    assert rc == 2 and "bad-" + PW not in out + err and "Traceback" not in err


def test_eval_with_url_credentials(tls_front, cli_index, beir, tmp_path):
    out_file = tmp_path / "result.json"
    rc, out, err = _run(["eval", str(beir), "--index", cli_index, "--spec", "bm25", "--no-progress",
                         "--url", _userinfo_url(tls_front), "--ca-certs", str(tls_front.ca),
                         "--out", str(out_file)])
    assert rc == 0, out + err
    text = out_file.read_text()
    assert PW not in text
    assert "bm25" in text


def test_demo_with_flags(tls_front, opensearch_client):
    name = f"test-sec-demo-{uuid.uuid4().hex[:6]}"
    try:
        rc, out, err = _run(["demo", "--index", name, "--limit", "20", "--spec", "bm25",
                             "--url", tls_front.url, "--user", "alice", "--password", PW,
                             "--ca-certs", str(tls_front.ca), "parse a JSON string"], timeout=600)
        assert rc == 0, out + err
        assert "pipeline 'bm25'" in out and "alice" in out  # describe() names the user only
    finally:
        opensearch_client.indices.delete(index=name, ignore_unavailable=True)
        opensearch_client.delete(index="osneural-codecs", id=name, ignore=404)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_with_env_credentials_warms_at_startup(tls_front, cli_index):
    port = _free_port()
    env = _env(OSNEURAL_OPENSEARCH_USER="svc", OSNEURAL_OPENSEARCH_PASSWORD=USERS["svc"])
    proc = subprocess.Popen(OSNEURAL + ["serve", "--url", tls_front.url, "--ca-certs", str(tls_front.ca),
                                        "--auth", "service", "--port", str(port), "--warm", "dense",
                                        "--allow-index", "test-sec-cli-*"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        health = None
        for _ in range(600):
            try:
                health = httpx.get(f"{base}/_osneural/health", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        assert health is not None and health.status_code == 200, proc.stdout.read() if proc.poll() is not None else ""
        # accepting requests means warm-up is done: the encoder is loaded before any query
        assert health.json()["encoders_loaded"] == ["dense"]
        r = httpx.post(f"{base}/{cli_index}/_search", timeout=30, json={"ext": {"osneural": {
            "query": "insulin", "spec": {"first_stages": [{"type": "dense", "k": 5}]}}}})
        assert r.status_code == 200 and r.json()["hits"]["hits"], r.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert USERS["svc"] not in out and '"event":"warm"' in out


def test_serve_refuses_all_interfaces_without_an_allow_list():
    rc, out, err = _run(["serve", "--host", "0.0.0.0", "--port", "1", "--no-warm"])
    assert rc == 2 and "--allow-index" in err

"""Host lists, credentials and TLS options: what every command's `--url` means."""

from __future__ import annotations

import argparse

import pytest

from osneural.connection import (
    ENV_INSECURE,
    ENV_PASSWORD,
    ENV_URL,
    ENV_USER,
    ClusterConfig,
    ClusterConfigError,
    add_cluster_arguments,
    parse_host,
)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_cluster_arguments(parser)
    return parser.parse_args(list(argv))


def test_default_is_the_local_node() -> None:
    cfg = ClusterConfig.from_values(env={})
    assert cfg.urls == ["http://127.0.0.1:9200"]
    assert cfg.http_auth is None


def test_repeated_and_comma_urls_flatten_and_dedupe() -> None:
    args = _args("--url", "http://a:9200,http://b:9201", "--url", "c:9202", "--url", "http://a:9200")
    cfg = ClusterConfig.from_values(args.url, env={})
    assert cfg.urls == ["http://a:9200", "http://b:9201", "http://c:9202"]
    kwargs = cfg.client_kwargs()
    assert [h["port"] for h in kwargs["hosts"]] == [9200, 9201, 9202]
    assert kwargs["max_retries"] == 4  # one retry per other host, plus one
    assert kwargs["pool_maxsize"] >= 8


def test_env_list_is_used_when_no_flag() -> None:
    cfg = ClusterConfig.from_values(None, env={ENV_URL: "http://x:1, http://y:2"})
    assert cfg.urls == ["http://x:1", "http://y:2"]
    assert ClusterConfig.from_values("http://z:3", env={ENV_URL: "http://x:1"}).urls == ["http://z:3"]


def test_credentials_in_url_are_split_out_and_decoded() -> None:
    cfg = ClusterConfig.from_values("https://alice:p%40ss%3Aw@node:9443", env={})
    assert cfg.urls == ["https://node:9443"]
    assert cfg.http_auth == ("alice", "p@ss:w")
    assert "p@ss" not in cfg.describe() and "p@ss" not in repr(cfg)
    kwargs = cfg.client_kwargs()
    assert kwargs["use_ssl"] and kwargs["verify_certs"]


def test_flags_beat_env_beat_url_credentials() -> None:
    env = {ENV_USER: "envuser", ENV_PASSWORD: "envpw"}
    assert ClusterConfig.from_values("http://u:p@h:1", env=env).http_auth == ("envuser", "envpw")
    assert ClusterConfig.from_values("http://u:p@h:1", user="flag", password="fpw",
                                     env=env).http_auth == ("flag", "fpw")
    assert ClusterConfig.from_values("http://u:p@h:1", env={}).http_auth == ("u", "p")


def test_conflicting_url_credentials_are_refused() -> None:
    with pytest.raises(ClusterConfigError, match="different credentials"):
        ClusterConfig.from_values(["http://a:1@h:1", "http://b:2@h:2"], env={})


def test_password_without_user_is_refused() -> None:
    with pytest.raises(ClusterConfigError, match="without a user"):
        ClusterConfig.from_values("http://h:1", password="x", env={})


@pytest.mark.parametrize("bad", ["ftp://h:1", "http://", "http://h:notaport", "http://h:1/prefix",
                                 "http://h:1?x=1", " , "])
def test_bad_urls_name_the_value_without_the_password(bad: str) -> None:
    with pytest.raises(ClusterConfigError) as info:
        ClusterConfig.from_values(bad.replace("h:", "u:secret@h:") if "h:" in bad else bad, env={})
    assert "secret" not in str(info.value)


def test_missing_ca_bundle_is_refused(tmp_path) -> None:
    with pytest.raises(ClusterConfigError, match="CA bundle"):
        ClusterConfig.from_values("https://h:1", ca_certs=str(tmp_path / "none.pem"), env={})
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    kwargs = ClusterConfig.from_values("https://h:1", ca_certs=str(pem), env={}).client_kwargs()
    assert kwargs["ca_certs"] == str(pem)


def test_insecure_from_flag_or_env() -> None:
    args = _args("--url", "https://h:1", "--insecure")
    assert ClusterConfig.from_args(args).client_kwargs()["verify_certs"] is False
    cfg = ClusterConfig.from_values("https://h:1", env={ENV_INSECURE: "true"})
    assert cfg.client_kwargs()["verify_certs"] is False


def test_ipv6_host_round_trips() -> None:
    host, creds = parse_host("http://[::1]:9200")
    assert host.url == "http://[::1]:9200" and creds is None


def test_client_spans_every_host() -> None:
    client = ClusterConfig.from_values("http://127.0.0.1:9,http://127.0.0.1:10", env={}).client()
    try:
        assert len(client.transport.connection_pool.connections) == 2
    finally:
        client.close()


def test_fast_json_serializer_reads_what_the_standard_module_reads() -> None:
    """orjson where it can, the standard module where orjson refuses: same values either way."""
    import json
    import math

    from osneural.connection import fast_json_serializer

    ser = fast_json_serializer()
    for text in ('{"hits": {"hits": [{"_id": "d1", "_score": 1.25, "t": "\\u00e9t\\u00e9"}]}}',
                 '{"big": 123456789012345678901234567890, "neg": -18446744073709551617}',
                 "[1e400, -0.0, 5e-324]"):
        assert ser.loads(text) == json.loads(text)
    assert math.isnan(ser.loads('{"x": NaN}')["x"])  # the standard module's extension
    assert ser.mimetype == "application/json"
    client = ClusterConfig.from_values("http://127.0.0.1:9").client()
    assert type(client.transport.serializer).__name__ == "FastJSONSerializer"


def test_json_response_writes_opensearch_shaped_json() -> None:
    import json

    from osneural.plugin.responses import json_response

    data = {"hits": {"hits": [{"_id": "é", "_score": 0.5}]}, 1: "non-string key"}
    assert json.loads(json_response(data).body) == {"hits": {"hits": [{"_id": "é", "_score": 0.5}]},
                                                    "1": "non-string key"}
    pretty = json_response({"a": [1]}, pretty=True).body.decode()
    assert pretty == '{\n  "a": [\n    1\n  ]\n}'
    assert json_response({"x": 1.5}, status=201).status_code == 201

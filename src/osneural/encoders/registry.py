"""Register an ml-commons export in a cluster, deploy it, and remember which model it is.

The zip goes up in chunks (`_plugins/_ml/models/_register_meta` with `total_chunks`, then
`upload_chunk/<n>`), which needs no route from the cluster back to this machine but does need
`plugins.ml_commons.allow_registering_model_via_local_file: true` (ml-commons' name for a custom
zip uploaded by the client). A URL the cluster fetches itself (`url=`) needs
`plugins.ml_commons.allow_registering_model_via_url: true` instead. Deploying on a cluster without dedicated
ML nodes needs `plugins.ml_commons.only_run_on_ml_node: false`. Those settings are checked first
and reported as the exact `_cluster/settings` body to apply (`MLCommonsSettingsError`); they are
changed only when the caller says so (`apply_settings=True`, `--apply-settings`), and then the
change is printed, never made silently.

After deploy, the model id is recorded beside the encoder's identity (`weights_sha256`, the same
digest osneural's own export records as `manifest["sha256"]` and ingestion writes to
`_meta.osneural.encoders.<kind>.sha256`) in the index's `_meta.osneural.ml_commons.<kind>`, so a
native `neural` / `neural_sparse` query and osneural's `"encode": "cluster"` find the model that
matches the vectors in that index.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from osneural.encoders.errors import EncoderError
from osneural.encoders.mlcommons import read_info, register_body

ML = "/_plugins/_ml"
DEFAULT_CHUNK_BYTES = 10_000_000  # ml-commons' own client splits models into 10 MB chunks
DEFAULT_TIMEOUT_S = 600.0


class RegistryError(EncoderError):
    """ml-commons refused or failed a register / upload / deploy step."""


class MLCommonsSettingsError(RegistryError):
    """The cluster's ml-commons settings do not allow what was asked; `body` is the fix."""

    def __init__(self, message: str, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.body = body


def _request(client: Any, method: str, path: str, body: Any = None, *, retries: int = 6,
             **kw: Any) -> dict[str, Any]:
    """One ml-commons call. ml-commons answers 429 `circuit_breaking_exception` while the JVM
    heap is above `plugins.ml_commons.jvm_heap_memory_threshold` (85%), which on a small heap
    is often garbage a collection is about to free: those are retried with backoff."""
    from opensearchpy.exceptions import TransportError

    delay = 0.5
    for attempt in range(retries + 1):
        try:
            return client.transport.perform_request(method, path, body=body, **kw)
        except TransportError as exc:
            breaker = exc.status_code == 429 and "circuit_breaking" in str(exc.info or exc.error)
            if breaker and attempt < retries:
                time.sleep(delay)
                delay *= 2
                continue
            raise RegistryError(f"{method} {path}: {exc.status_code} {exc.info or exc.error}") from exc
    raise AssertionError("unreachable")


def _flat_setting(settings: dict[str, Any], key: str) -> Any:
    for scope in ("transient", "persistent", "defaults"):
        value = (settings.get(scope) or {}).get(key)
        if value is not None:
            return value
    return None


def required_settings(client: Any, *, via_url: bool = False) -> list[dict[str, Any]]:
    """The ml-commons settings this registration needs, each with its current value and
    whether it is met. `only_run_on_ml_node` is only needed when no node has the `ml` role."""
    settings = client.cluster.get_settings(include_defaults=True, flat_settings=True)
    nodes = client.nodes.info(filter_path="nodes.*.roles")
    roles = [r for n in (nodes.get("nodes") or {}).values() for r in n.get("roles", [])]
    rows = []
    if "ml" not in roles:
        key = "plugins.ml_commons.only_run_on_ml_node"
        cur = _flat_setting(settings, key)
        rows.append({"setting": key, "current": cur, "required": False,
                     "met": str(cur).lower() == "false",
                     "why": "no node has the ml role, so models can only deploy on data nodes"})
    if via_url:
        key, why = ("plugins.ml_commons.allow_registering_model_via_url",
                    "the cluster fetches the zip from a URL itself")
    else:
        key, why = ("plugins.ml_commons.allow_registering_model_via_local_file",
                    "ml-commons calls a chunked upload of a custom zip a 'local file' model")
    cur = _flat_setting(settings, key)
    rows.append({"setting": key, "current": cur, "required": True,
                 "met": str(cur).lower() == "true", "why": why})
    key = "plugins.ml_commons.native_memory_threshold"
    cur = _flat_setting(settings, key)
    rows.append({"setting": key, "current": cur, "required": None, "met": True,
                 "why": "deploy is refused while the machine's memory use is above this percent "
                        "(reported, not changed)"})
    return rows


def check_settings(client: Any, *, via_url: bool = False, apply: bool = False,
                   log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Raise `MLCommonsSettingsError` naming each unmet setting and the body that fixes it; with
    `apply`, set them (persistent) and log what changed."""
    rows = required_settings(client, via_url=via_url)
    unmet = {r["setting"]: r["required"] for r in rows if not r["met"]}
    for r in rows:
        if r["required"] is None:
            log(f"ml-commons: {r['setting']} = {r['current']} ({r['why']})")
    if not unmet:
        return rows
    body = {"persistent": unmet}
    lines = "; ".join(f"{k} is {next(r['current'] for r in rows if r['setting'] == k)!r}, "
                      f"needs {v!r} ({next(r['why'] for r in rows if r['setting'] == k)})"
                      for k, v in unmet.items())
    if not apply:
        raise MLCommonsSettingsError(
            f"ml-commons settings block this registration: {lines}. Apply with "
            f"PUT _cluster/settings {body} or pass --apply-settings", body)
    client.cluster.put_settings(body=body)
    log(f"ml-commons: set {body} ({lines})")
    return required_settings(client, via_url=via_url)


def wait_task(client: Any, task_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
              what: str = "task") -> dict[str, Any]:
    """Poll `_plugins/_ml/tasks/<id>` until COMPLETED; FAILED and timeouts raise with the
    cluster's own error text."""
    deadline = time.monotonic() + timeout_s
    delay = 0.25
    while True:
        task = _request(client, "GET", f"{ML}/tasks/{task_id}")
        state = task.get("state")
        if state == "COMPLETED":
            return task
        if state in ("FAILED", "CANCELLED", "COMPLETED_WITH_ERROR"):
            raise RegistryError(f"{what} {task_id} {state}: {task.get('error') or task}")
        if time.monotonic() > deadline:
            raise RegistryError(f"{what} {task_id} still {state} after {timeout_s:.0f}s")
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def upload_chunks(client: Any, folder: Path, info: dict[str, Any], *, name: str | None = None,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> str:
    """Register the zip's metadata, upload it chunk by chunk; return the model id."""
    body = register_body(info, name=name, chunk_bytes=chunk_bytes)
    # the metadata step of a chunked upload is its own endpoint; `_register` would treat a body
    # without url or connector as the name of a pre-trained model to download
    resp = _request(client, "POST", f"{ML}/models/_register_meta", body=body)
    model_id = resp.get("model_id")
    if not model_id:
        raise RegistryError(f"_register_meta answered without a model id: {resp}")
    with open(folder / info["zip"], "rb") as fh:
        for i in range(body["total_chunks"]):
            chunk = fh.read(chunk_bytes)
            # raw bytes; OpenSearch's REST layer accepts only its x-content types here, and
            # ml-commons reads the body as bytes whatever the declared type (as opensearch-py-ml)
            _request(client, "POST", f"{ML}/models/{model_id}/upload_chunk/{i}", body=chunk)
    return model_id


def register_via_url(client: Any, info: dict[str, Any], url: str, *,
                     name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    body = register_body(info, name=name)
    body["url"] = url
    resp = _request(client, "POST", f"{ML}/models/_register", body=body)
    task = wait_task(client, resp["task_id"], timeout_s=timeout_s, what="register")
    return task["model_id"]


def deploy(client: Any, model_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """Deploy and wait; returns the seconds it took."""
    t0 = time.perf_counter()
    resp = _request(client, "POST", f"{ML}/models/{model_id}/_deploy")
    if resp.get("task_id"):
        wait_task(client, resp["task_id"], timeout_s=timeout_s, what="deploy")
    return time.perf_counter() - t0


def undeploy(client: Any, model_id: str, *, delete: bool = False) -> None:
    """Unload the model from every node (and delete it with `delete`)."""
    _request(client, "POST", f"{ML}/models/{model_id}/_undeploy")
    if delete:
        _request(client, "DELETE", f"{ML}/models/{model_id}")


def record_model(client: Any, index: str, kind: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Merge `entry` into `_meta.osneural.ml_commons.<kind>` of `index`, refusing a model whose
    weights are not the ones the index's vectors came from."""
    mapping = client.indices.get_mapping(index=index)
    meta = (next(iter(mapping.values()))["mappings"].get("_meta") or {})
    osn = meta.setdefault("osneural", {})
    indexed = ((osn.get("encoders") or {}).get(kind) or {}).get("sha256")
    if indexed and indexed != entry["weights_sha256"]:
        raise RegistryError(
            f"index {index}: its {kind} vectors come from encoder sha256 {indexed[:12]}, the "
            f"model being recorded from {entry['weights_sha256'][:12]}; native queries would "
            "compare vectors of two different models")
    osn.setdefault("ml_commons", {})[kind] = entry
    client.indices.put_mapping(index=index, body={"_meta": meta})
    return entry


def recorded_model(client: Any, index: str, kind: str) -> dict[str, Any] | None:
    """`_meta.osneural.ml_commons.<kind>` of `index`, or None."""
    mapping = client.indices.get_mapping(index=index)
    meta = (next(iter(mapping.values()))["mappings"].get("_meta") or {})
    return ((meta.get("osneural") or {}).get("ml_commons") or {}).get(kind)


def register_model(
    client: Any,
    folder: str | Path,
    *,
    index: str | None = None,
    url: str | None = None,
    name: str | None = None,
    apply_settings: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Register + deploy an ml-commons export folder; record it in `index` when given.

    Returns `{model_id, kind, function_name, weights_sha256, zip_sha256, register_s, deploy_s}`.
    """
    folder = Path(folder)
    info = read_info(folder)
    check_settings(client, via_url=url is not None, apply=apply_settings, log=log)
    t0 = time.perf_counter()
    if url is None:
        model_id = upload_chunks(client, folder, info, name=name, chunk_bytes=chunk_bytes)
    else:
        model_id = register_via_url(client, info, url, name=name, timeout_s=timeout_s)
    register_s = time.perf_counter() - t0
    log(f"ml-commons: registered {info['kind']} model {model_id} ({register_s:.1f}s); deploying")
    deploy_s = deploy(client, model_id, timeout_s=timeout_s)
    log(f"ml-commons: deployed {model_id} in {deploy_s:.1f}s")
    entry = {"model_id": model_id, "kind": info["kind"], "function_name": info["function_name"],
             "weights_sha256": info["weights_sha256"], "zip_sha256": info["zip_sha256"],
             "register_s": round(register_s, 2), "deploy_s": round(deploy_s, 2)}
    if index:
        record_model(client, index, info["kind"], entry)
    return entry


def predict_dense(client: Any, model_id: str, texts: list[str]) -> list[list[float]]:
    """ml-commons' embeddings for `texts` (`_predict/text_embedding`)."""
    resp = _request(client, "POST", f"{ML}/_predict/text_embedding/{model_id}",
                    body={"text_docs": list(texts), "return_number": True,
                          "target_response": ["sentence_embedding"]})
    out = []
    for item in resp["inference_results"]:
        tensor = next(t for t in item["output"] if t.get("name") == "sentence_embedding")
        out.append(tensor["data"])
    return out


def predict_sparse(client: Any, model_id: str, texts: list[str]) -> list[dict[str, float]]:
    """ml-commons' sparse weights for `texts` (`_predict/sparse_encoding`)."""
    resp = _request(client, "POST", f"{ML}/_predict/sparse_encoding/{model_id}",
                    body={"text_docs": list(texts)})
    out = []
    for item in resp["inference_results"]:
        tensor = item["output"][0]
        out.append(dict(tensor["dataAsMap"]["response"][0]))
    return out

"""An existing OpenSearch index as a corpus: `osneural ingest --from-index SOURCE`.

Apps already keep their documents in an index. Rather than exporting them to JSONL, the source
index is read as one more corpus iterator (`IndexCorpus`, accepted wherever a corpus path is):
every document's `_source` becomes a record, its `_id` the id, and the fields named by the title
and text paths are encoded. Everything else about the run -- batches, failure report, `--resume`,
the summary -- is the file path's, so the two cannot drift apart.

Reading: a point in time (PIT) frozen at the start plus `search_after` on `_shard_doc` (the PIT's
own tiebreaker, checked against 3.6: `_doc` repeats across shards), so documents the app writes
meanwhile neither shift pages nor appear twice, and deep pages cost the same as the first. A PIT
takes `slice`: with `--ray` the driver reads one slice per worker side by side (`read_sliced`),
so reading the source keeps pace with a pool of encoders.

Before anything is written, `open_source` refuses what would go wrong later with a clear message:
a missing or unreadable source, a source whose `_source` is off (nothing to copy), title/text
paths the source does not map, and source fields that take osneural's own field names. The
target keeps the source's field mappings, `dynamic` rules and analysis settings (`target_options`).
A source built by an earlier osneural release keeps its app fields in a stored-only `metadata`
object: they are lifted to the top level here, which is the upgrade path of such an index.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from osneural.ingest.corpus import FieldNames
from osneural.ingest.plan import IndexOptions, IngestError
from osneural.mappings import LEGACY_METADATA, reserved_field

#: PIT lifetime between two pages; renewed by every page request.
KEEP_ALIVE = "10m"
#: Documents per page; a page is a few MB of `_source` for typical catalogs.
PAGE_SIZE = 500
#: Representations whose fields are `knn_vector`s: they need the static `index.knn` setting.
KNN_REPRESENTATIONS = frozenset({"dense", "multivector"})
#: Index settings carried from the source to the target (what its field mappings may refer to).
CARRIED_SETTINGS = ("index.analysis.", "index.similarity.", "index.number_of_shards")


class SourceError(IngestError):
    """The source index cannot be read or enriched as asked; nothing was written."""


@dataclass
class IndexCorpus:
    """A source index to read as a corpus, with what `open_source` found out about it."""

    client: Any
    name: str  #: the concrete index (an alias given as the source is resolved)
    given: str  #: the name as given (an alias, maybe)
    mapping: dict[str, Any]
    settings: dict[str, Any]  #: flat
    count: int
    legacy: bool = False  #: built by an earlier osneural release (app fields under `metadata`)
    osneural: bool = False  #: has `_meta.osneural` (its representation fields are recomputed)
    #: the title/text paths it was checked for (the run's, unless the caller gives others)
    fields: FieldNames = field(default_factory=FieldNames)
    page_size: int = PAGE_SIZE
    #: PIT slices read side by side (threads); the Ray driver reads one per worker
    slices: int = 1
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"index {self.given!r}" + (f" ({self.name})" if self.given != self.name else "")

    def __len__(self) -> int:
        return self.count

    def records(self) -> Iterator[dict[str, Any]]:
        """Every document as a record: `_id` plus its `_source`, in the PIT's shard order."""
        paths = {self.fields.title, *self.fields.text_paths}
        hits = (read_hits(self.client, self.name, self.page_size) if self.slices <= 1
                else read_sliced(self.client, self.name, self.slices, self.page_size))
        for hit in hits:
            src = dict(hit.get("_source") or {})
            if self.osneural:  # osneural's own fields are recomputed, never copied
                for key in [k for k in src if reserved_field(k) and k not in paths]:
                    del src[key]
            if self.legacy and isinstance(src.get(LEGACY_METADATA), Mapping):
                lifted = src.pop(LEGACY_METADATA)
                for key, value in lifted.items():
                    src.setdefault(key, value)
            src["_id"] = hit["_id"]
            yield src


def read_hits(client: Any, index: str, page_size: int = PAGE_SIZE,
              slice_: tuple[int, int] | None = None, keep_alive: str = KEEP_ALIVE,
              ) -> Iterator[dict[str, Any]]:
    """All hits of `index` (or of one `(id, max)` slice) through a PIT; the PIT is deleted at
    the end, also when the caller stops early."""
    pit = client.create_pit(index=index, keep_alive=keep_alive)["pit_id"]
    try:
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {"size": page_size, "pit": {"id": pit, "keep_alive": keep_alive},
                                    "sort": [{"_shard_doc": "asc"}], "track_total_hits": False}
            if slice_ is not None:
                body["slice"] = {"id": slice_[0], "max": slice_[1]}
            if after is not None:
                body["search_after"] = after
            resp = client.search(body=body, request_timeout=120)
            pit = resp.get("pit_id") or pit
            hits = resp["hits"]["hits"]
            if not hits:
                return
            yield from hits
            after = hits[-1]["sort"]
    finally:
        with contextlib.suppress(Exception):  # an expired PIT is gone anyway
            client.delete_pit(body={"pit_id": [pit]})


def read_sliced(client: Any, index: str, slices: int, page_size: int = PAGE_SIZE,
                ) -> Iterator[dict[str, Any]]:
    """All hits of `index`, its PIT slices read by one thread each (pages interleaved).

    Reading is network and node work; slices keep several shards busy while the caller encodes.
    Each slice has its own PIT; an error in one is raised here, and stopping early stops all."""
    import queue
    import threading

    pages: queue.Queue[Any] = queue.Queue(maxsize=2 * slices)
    stop = threading.Event()
    done = object()

    def read(i: int) -> None:
        try:
            page: list[dict[str, Any]] = []
            for hit in read_hits(client, index, page_size, (i, slices)):
                page.append(hit)
                if len(page) >= page_size:
                    while not stop.is_set():
                        with contextlib.suppress(queue.Full):
                            pages.put(page, timeout=0.5)
                            break
                    if stop.is_set():
                        return
                    page = []
            pages.put(page)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            pages.put(exc)
        finally:
            pages.put(done)

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(slices)]
    for t in threads:
        t.start()
    try:
        left = slices
        while left:
            item = pages.get()
            if item is done:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield from item
    finally:
        stop.set()
        while any(t.is_alive() for t in threads):  # unblock writers waiting on a full queue
            with contextlib.suppress(queue.Empty):
                pages.get(timeout=0.1)


def _property(props: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """The mapping of a dotted path (through `properties`), or None when not mapped."""
    node: Mapping[str, Any] | None = {"properties": props}
    for part in path.split("."):
        node = ((node or {}).get("properties") or {}).get(part)
        if node is None:
            return None
    return dict(node)


def _refusal(exc: Any, name: str) -> SourceError:
    from osneural.ingest.prepare import transport_reason

    status = getattr(exc, "status_code", None)
    if status == 404:
        return SourceError(f"source index {name!r} does not exist; nothing was written")
    if status in (401, 403):
        return SourceError(f"the caller may not read source index {name!r} ({status} "
                           f"{transport_reason(exc)}); nothing was written")
    return SourceError(f"source index {name!r} cannot be read: {transport_reason(exc)}; "
                       "nothing was written")


def open_source(client: Any, name: str, fields: FieldNames) -> IndexCorpus:
    """Check that `name` can be read and enriched with these title/text paths; describe it."""
    from opensearchpy.exceptions import TransportError

    try:
        found = client.indices.get(index=name)
        if len(found) != 1:
            raise SourceError(f"source {name!r} names {len(found)} indices ({', '.join(sorted(found))})"
                              "; give one index (or an alias of one)")
        concrete = next(iter(found))
        flat = client.indices.get_settings(index=concrete, flat_settings=True)[concrete]["settings"]
        count = int(client.count(index=concrete)["count"])
    except TransportError as exc:
        if not isinstance(exc.status_code, int):
            raise
        raise _refusal(exc, name) from None
    mapping = found[concrete].get("mappings") or {}
    props = mapping.get("properties") or {}
    if (mapping.get("_source") or {}).get("enabled") is False:
        raise SourceError(f"source index {name!r} has _source disabled: its documents cannot be "
                          "read back to copy them; nothing was written")
    meta = (mapping.get("_meta") or {}).get("osneural") or {}
    legacy = bool(meta) and (props.get(LEGACY_METADATA) or {}).get("enabled") is False
    src = IndexCorpus(client, concrete, name, mapping, flat, count, legacy=legacy,
                      osneural=bool(meta), fields=fields)
    paths = (fields.title, *fields.text_paths)
    lookup = dict(props)
    if legacy:  # the lifted app fields are mapped dynamically in the target
        lookup = {**lookup, **{p.split(".")[0]: {} for p in paths}}
    mapped = [p for p in paths if _property(lookup, p) is not None]
    if not mapped:
        texts = sorted(k for k, v in props.items() if v.get("type") == "text")
        raise SourceError(
            f"source index {name!r} maps none of the title field {fields.title!r} or text "
            f"fields {', '.join(map(repr, fields.text_paths))}, so no document has them; its text "
            f"fields are {texts or 'none'} (dotted paths reach into objects); nothing was written")
    for key, prop in props.items():
        if not reserved_field(key):
            continue
        if key in ("title", "text") and key in paths:
            if prop.get("type") != "text":
                raise SourceError(
                    f"source field {key!r} is mapped as {prop.get('type', 'object')!r}; osneural "
                    f"searches {key!r} with BM25 and needs a text field there; nothing was written")
            continue
        if not src.osneural:
            raise SourceError(
                f"source field {key!r} is one of osneural's own fields; osneural would overwrite "
                f"it -- encode it with --title-field / --text-field, or rename it in a copy of the "
                "index; nothing was written")
    excludes = [f for f in (mapping.get("_source") or {}).get("excludes") or []
                if not (src.osneural and reserved_field(f))]  # osneural's own are recomputed
    if excludes:
        src.notes.append(f"source fields excluded from _source ({', '.join(excludes)}) cannot be "
                         "read back and are not copied")
    return src


def source_app_mapping(src: IndexCorpus, fields: FieldNames) -> dict[str, Any]:
    """The source's mapping for its own fields, to be merged beside osneural's in the target.

    osneural's representation fields (an osneural-built source) are left to osneural; a `title`
    or `text` field that is the title/text path keeps the source's definition (its analyzer and
    sub-fields), which is a text field (checked by `open_source`)."""
    mapping = copy.deepcopy(src.mapping)
    props = mapping.get("properties") or {}
    paths = {fields.title, *fields.text_paths}
    for key in list(props):
        if reserved_field(key) and not (key in ("title", "text") and key in paths):
            del props[key]
    if src.legacy:
        props.pop(LEGACY_METADATA, None)
    out = {k: v for k, v in mapping.items()
           if k in ("dynamic", "dynamic_templates", "date_detection", "numeric_detection",
                    "dynamic_date_formats")}
    if src.osneural:
        out["dynamic"] = True  # earlier releases: strict, which would refuse the lifted fields
    out["properties"] = props
    meta = {k: v for k, v in (mapping.get("_meta") or {}).items() if k != "osneural"}
    if meta:
        out["_meta"] = meta
    return out


def target_options(src: IndexCorpus, fields: FieldNames, options: IndexOptions) -> IndexOptions:
    """`options` for the target: the source's mapping and analysis settings under the user's
    own `--mapping` (which wins field by field), and the source's shard count unless given."""
    app = source_app_mapping(src, fields)
    user = options.app_mapping or {}
    if user:
        app["properties"] = {**app["properties"], **(user.get("properties") or {})}
        app.update({k: v for k, v in user.items() if k != "properties"})
    settings: dict[str, Any] = {k: v for k, v in src.settings.items()
                                if k.startswith(CARRIED_SETTINGS)}
    given = {k.removeprefix("index.") for k, _ in options.settings}
    if "number_of_shards" in given:
        settings.pop("index.number_of_shards", None)
    settings.update(options.app_settings or {})
    return dataclasses.replace(options, app_mapping=app, app_settings=settings,
                               mapping_origin=f"mapping of source index {src.given!r}")


def check_in_place(index: str, settings: Mapping[str, Any], representations: list[str]) -> None:
    """Refuse `--in-place` when a representation needs `index.knn` and the index lacks it.

    `index.knn` is a static setting (OpenSearch answers "Can't update non dynamic settings
    [[index.knn]] for open indices"), and the k-NN plugin refuses a `knn_vector` field with a
    method on an index without it ("Cannot set modelId or method parameters when index.knn
    setting is false"), so the only way to add vectors is a new index."""
    need = sorted(KNN_REPRESENTATIONS & set(representations))
    knn = str(settings.get("index.knn", "false")).lower() == "true"
    if need and not knn:
        plain = [r for r in representations if r not in KNN_REPRESENTATIONS and r != "text"]
        raise SourceError(
            f"--in-place cannot add {', '.join(need)} to {index!r}: those are knn_vector fields, "
            "which need index.knn=true, a setting OpenSearch allows only when an index is "
            f"created. Either enrich a new index and move the alias: osneural ingest --from-index "
            f"{index} --index {index}-neural --swap-alias ALIAS; or keep --in-place with "
            f"representations that need no k-NN: --representations "
            f"{','.join(plain) or 'sparse,binary,pq'}; nothing was written")


#: Fields that mark an enriched document for an in-place `--resume` (binary doc values, a
#: keyword and vectors answer `exists`; rank_features does not: "[rank_features] fields do not
#: support [exists] queries", checked against 3.6), best first. The fields kept out of `_source`
#: come first because they are the ones a document can lose: OpenSearch's own `_update` /
#: `_update_by_query` rebuild a document from `_source` and drop them while every other
#: representation survives, and a `--resume` then re-encodes exactly those documents. `mv_codes`
#: is always kept out (about 13 KB/doc of base64 there); the vectors are when the mapping
#: excludes them (`osneural.mappings.vectors_out_of_source`).
RESUME_MARKERS = (("multivector", "mv_codes"), ("binary", "bin_code"), ("pq", "dense_pq"),
                  ("dense", "dense"))


def resume_marker(representations: list[str] | tuple[str, ...],
                  source_excludes: tuple[str, ...] | list[str] = ("mv_codes",)) -> str | None:
    """The marker field of an in-place `--resume`: the first one an `_update` can drop (kept
    out of `_source`), else the first one the representations write."""
    written = [f for rep, f in RESUME_MARKERS if rep in representations]
    return next((f for f in written if f in source_excludes), written[0] if written else None)


def swap_alias(client: Any, alias: str, source: str, target: str) -> None:
    """Move `alias` from `source` to `target` in one `_aliases` call (atomic for readers)."""
    actions: list[dict[str, Any]] = []
    if client.indices.exists_alias(name=alias, index=source):
        actions.append({"remove": {"index": source, "alias": alias}})
    actions.append({"add": {"index": target, "alias": alias}})
    client.indices.update_aliases(body={"actions": actions})


def check_alias(client: Any, alias: str, source: str, target: str) -> None:
    """Refuse (before writing) an alias that points at an index other than source and target,
    or a name that is an index: moving it would not be what the caller asked."""
    from opensearchpy.exceptions import NotFoundError

    if alias in (source, target):
        raise SourceError(f"--swap-alias {alias!r} is the name of the source or target index; "
                          "name an alias; nothing was written")
    if client.indices.exists(index=alias) and not client.indices.exists_alias(name=alias):
        raise SourceError(f"--swap-alias {alias!r} is an index, not an alias; nothing was written")
    try:
        held = set(client.indices.get_alias(name=alias))
    except NotFoundError:
        return
    others = sorted(held - {source, target})
    if others:
        raise SourceError(f"alias {alias!r} points at {', '.join(others)}, not at the source "
                          f"{source!r}; nothing was written")


def plan_source(client: Any, corpus: Any, index: str, fields: FieldNames | None,
                options: IndexOptions, in_place: bool, alias: str | None,
                ) -> tuple[Any, FieldNames | None, IndexOptions, str]:
    """The corpus, field names and index options of a run, checked before anything is written.

    For a source index: its fields are all kept (`FieldNames.keep`), the target takes the
    source's mapping (unless enriched in place), the target must differ from the source unless
    `in_place`, and a `--swap-alias` must be one the run may move. The index returned is the
    one to write: in place, the concrete index behind an alias given as the source."""
    if not isinstance(corpus, IndexCorpus):
        if in_place or alias:
            flag = "--in-place" if in_place else "--swap-alias"
            raise SourceError(f"{flag} needs a source index (--from-index); nothing was written")
        return corpus, fields, options, index
    fields = dataclasses.replace(fields or corpus.fields, id="_id", keep=True)
    corpus.fields = fields
    if in_place:
        if index not in (corpus.name, corpus.given):
            raise SourceError(f"--in-place enriches the source itself ({corpus.name!r}); leave "
                              f"--index out or give the same name, not {index!r}")
        if alias:
            raise SourceError("--swap-alias moves an alias to a new index; with --in-place the "
                              "alias already points at the enriched index")
        return corpus, fields, options, corpus.name
    if index in (corpus.name, corpus.given):
        raise SourceError(f"target {index!r} is the source index: give another --index, or "
                          "--in-place to enrich the source itself; nothing was written")
    if alias:
        check_alias(client, alias, corpus.name, index)
    return corpus, fields, target_options(corpus, fields, options), index


def finish_source(client: Any, corpus: Any, index: str, alias: str | None, run: Any) -> None:
    """Move the alias after a complete run; say why not otherwise (the summary's notes)."""
    if not alias or not isinstance(corpus, IndexCorpus):
        return
    summary = run.summary
    if summary.failed or summary.aborted:
        summary.notes.append(f"alias {alias!r} was not moved: {summary.failed} documents failed "
                             "(see the failure report); fix them and rerun with --resume")
        return
    swap_alias(client, alias, corpus.name, index)
    summary.notes.append(f"alias {alias!r} moved from {corpus.name!r} to {index!r}")

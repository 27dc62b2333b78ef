"""Dedup pairs: a removed duplicate beside the document its cluster kept in its place, so that a
researcher can judge a dedup pass's precision (``refinery stats RUN --pairs STAGE``, and a few
pairs per pass in the report).

A cluster-based dedup stage (``url_dedup``, ``exact_dedup``, ``minhash_dedup``) records the cluster
of every clustered document in a column (``url_cluster_id``, ...): the doc key of the document the
cluster keeps, ``(shard index << 32) | row``, shard index in its index's ``manifest.json``. So the
kept twin of a removed document is the row of the kept shard named by ``cluster_id >> 32`` that
carries the same id.

Cost, bounded by the pairs shown and not by the run's size: the removed documents are the run-wide
sample of the stage's removals (:func:`refinery.stats.samples.load_samples`, the small
``samples/`` files of its pass; the report passes the samples it has read); then only the removed shards of the sampled documents
(their ``id``, ``url``, ``text`` and cluster columns) and the kept shards their clusters name, the
row groups whose cluster-id statistics hold the id (a kept shard's representatives come in row
order, so their ids rise and a row group's min/max prunes well). At most ``show`` of each.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refinery.io import fs
from refinery.io.parquet import read_columns
from refinery.io.readahead import read_ahead
from refinery.rundir import PassDir, RunDir
from refinery.stats.funnel import load_run_stats, pass_not_counted_yet
from refinery.stats.samples import load_samples

#: dedup stage kind -> (its cluster column, its index's method). The stages' own ``cluster_column``
#: (refinery.stages.dedup); stats never imports stages, a test holds the two equal
CLUSTER_COLUMNS: dict[str, tuple[str, str]] = {
    "minhash_dedup": ("dedup_cluster_id", "minhash"),
    "exact_dedup": ("exact_cluster_id", "exact"),
    "url_dedup": ("url_cluster_id", "url"),
}
#: the characters of each text shown, and the differing spans listed per pair
HEAD_CHARS = 300
DIFF_SPANS = 5
DIFF_SPAN_CHARS = 80
#: words compared for the diff (difflib is quadratic at worst): a 4 MB page is not diffed whole
DIFF_WORDS = 3000


class PairsError(ValueError):
    """``--pairs`` names no dedup stage of the run (one line, exit 2)."""


@dataclass
class PairSide:
    shard: str
    id: str | None
    url: str | None
    chars: int
    head: str  # the first HEAD_CHARS characters of the text
    where: str = "kept"  # "kept", or "removed later by STAGE (REASON)" for a representative a later stage removed


@dataclass
class DedupPair:
    stage: str
    removed: PairSide
    kept: PairSide | None  # None: the cluster's kept document was not found (see ``missing``)
    cluster_id: int | None
    estimated_jaccard: float | None  # the stage's metric: MinHash's estimate against the kept copy
    jaccard: float | None  # the true Jaccard of the two texts' word n-grams (the index's ngram)
    identical: bool = False  # same normalized words
    diff: list[dict[str, Any]] = field(default_factory=list)  # {"at_word", "removed", "kept"}
    missing: str = ""


def dedup_stages(stats: dict[str, Any]) -> list[str]:
    """The run's cluster-based dedup stages that removed something, in funnel order."""
    return [s["stage"] for s in stats.get("stages", []) if s.get("kind") in CLUSTER_COLUMNS and s.get("docs_removed")]


def dedup_pairs(run_dir: str, stage: str, show: int = 10, samples: pa.Table | None = None,
                stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"stage", "kind", "removed", "pairs": [DedupPair as dict], "read": {...}}`` for ``show``
    removed documents of ``stage`` sampled run-wide. ``samples``/``stats``: what the caller (the
    report) has loaded already (``load_samples(run_dir, per_reason=...)``, ``load_run_stats``)."""
    stats = stats if stats is not None else load_run_stats(run_dir)
    kinds = {s["stage"]: s.get("kind") for s in stats.get("stages", [])}
    if stage not in kinds and (waiting := pass_not_counted_yet(stats, stage)):
        raise PairsError(f"--pairs: {run_dir}: {waiting}")
    if kinds.get(stage) not in CLUSTER_COLUMNS:
        known = [s for s, k in kinds.items() if k in CLUSTER_COLUMNS]
        raise PairsError(f"--pairs: {stage!r} is no url / exact / minhash dedup stage of {run_dir}"
                         + (f" (its dedup stages: {', '.join(known)})" if known else " (it has none)"))
    kind = str(kinds[stage])
    column, method = CLUSTER_COLUMNS[kind]
    removed_total = next(s["docs_removed"] for s in stats["stages"] if s["stage"] == stage)
    run = RunDir(run_dir)
    pass_dir = _pass_of_stage(run, stage)
    if samples is None:  # the stage's pass's samples only: a third of the files on a 3-pass run
        samples = load_samples(run_dir, per_reason=show, passes=[pass_dir])
    chosen = [r for r in samples.to_pylist() if r["stage"] == stage][:show] if show else []
    result: dict[str, Any] = {"stage": stage, "kind": kind, "removed": removed_total, "pairs": [],
                              "read": {"removed_shards": 0, "kept_shards": 0}}
    if not chosen:
        return result
    manifest = _index_manifest(run, pass_dir, stage, method)
    ngram = int(((manifest or {}).get("params") or {}).get("ngram") or 5)
    shard_names = {int(s["index"]): str(s["name"]) for s in (manifest or {}).get("shards", [])
                   if isinstance(s, dict) and "index" in s and "name" in s}
    removed_rows = _removed_rows(pass_dir, stage, column, chosen)
    result["read"]["removed_shards"] = len({r["shard"] for r in chosen})
    wanted: dict[str, set[int]] = {}  # kept shard -> cluster ids
    for r in chosen:
        cid = (removed_rows.get((r["shard"], r["id"])) or {}).get(column)
        if cid is not None and (cid >> 32) in shard_names:
            wanted.setdefault(shard_names[cid >> 32], set()).add(int(cid))
    kept_rows = _kept_rows(pass_dir, stage, column, wanted)
    result["read"]["kept_shards"] = len(wanted)
    for r in chosen:
        result["pairs"].append(asdict(_pair(stage, r, removed_rows.get((r["shard"], r["id"])), kept_rows, column,
                                            shard_names, manifest is not None, ngram)))
    return result


def _pair(stage: str, sample: dict[str, Any], row: dict[str, Any] | None, kept_rows: dict[int, dict[str, Any]],
          column: str, shard_names: dict[int, str], have_index: bool, ngram: int) -> DedupPair:
    text = (row or {}).get("text") or ""
    removed = PairSide(sample["shard"], sample["id"], sample["url"], len(text) if row else int(sample["chars"] or 0),
                       (text if row else sample["snippet"] or "")[:HEAD_CHARS], where=f"removed by {stage}")
    metric = sample.get("metric")
    estimated = float(metric) if metric is not None and not np.isnan(metric) else None
    cid = (row or {}).get(column)
    pair = DedupPair(stage, removed, None, cid, estimated, None)
    if row is None:
        pair.missing = "the removed document is no longer in its removed shard"
    elif cid is None:
        pair.missing = f"the removed document has no {column}"
    elif not have_index:
        pair.missing = "the dedup index's manifest.json (its shard list) is not on this machine"
    elif (cid >> 32) not in shard_names:
        pair.missing = f"cluster {cid}: shard {cid >> 32} is not in the dedup index's manifest"
    elif cid not in kept_rows:
        pair.missing = f"cluster {cid}: no document of shard {shard_names[cid >> 32]} carries it (a failed shard?)"
    if pair.missing:
        return pair
    kept = kept_rows[cid]
    kept_text = kept.get("text") or ""
    pair.kept = PairSide(kept["shard"], kept.get("id"), kept.get("url"), len(kept_text), kept_text[:HEAD_CHARS],
                         kept.get("where") or "kept")
    pair.jaccard, pair.identical = _jaccard(text, kept_text, ngram)
    pair.diff = [] if pair.identical else word_diff(text, kept_text)
    return pair


def _pass_of_stage(run: RunDir, stage: str) -> PassDir:
    """The document pass whose removed/ holds ``stage``'s removals: the pass of that name (a plan's
    dedup pass), else the pass whose funnel lists it (a YAML dedup stage), else the first."""
    dirs = run.document_pass_dirs()
    if len(dirs) == 1:
        return dirs[0]
    names = [p.get("name") for p in (run.recorded_plan() or {}).get("passes", []) if p.get("kind") != "tokenize"]
    by_name = dict(zip(names, dirs))
    if stage in by_name:
        return by_name[stage]
    for pass_dir in dirs:
        pass_stats = fs.read_json_if_any(pass_dir.stats_json) or {}
        if any(s.get("stage") == stage for s in pass_stats.get("stages", [])):
            return pass_dir
    return dirs[0]


def _index_manifest(run: RunDir, pass_dir: PassDir, stage: str, method: str) -> dict[str, Any] | None:
    """The stage's dedup index manifest: a plan pass's ``<pass>/index``, where the pass's
    ``dedup_stats.json`` says it built it (``refinery dedup``'s ``OUT/dedup`` or ``--work-dir``),
    or a YAML stage's ``dedup_dir``. None when none is readable here."""
    places = [pass_dir.index_dir, fs.join(pass_dir.root, "dedup")]
    try:
        recorded = fs.read_json_if_any(fs.join(pass_dir.root, "dedup_stats.json")) or {}
    except (fs.StorageError, OSError, ValueError):
        recorded = {}
    if isinstance(recorded.get("work_dir"), str):
        places.append(recorded["work_dir"])
    config_stages = ((fs.read_json_if_any(run.run_json) or {}).get("config") or {}).get("stages") or []
    places += [str((s.get("params") or {}).get("dedup_dir")) for s in config_stages
               if (s.get("name") or s.get("type")) == stage and (s.get("params") or {}).get("dedup_dir")]
    for place in places:
        try:
            manifest = fs.read_json_if_any(fs.join(place, "manifest.json"))
        except (fs.StorageError, OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("method") == method:
            return manifest
    return None


def _removed_rows(pass_dir: PassDir, stage: str, column: str,
                  chosen: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(shard, id) -> the sampled removed documents' rows (id, url, text, cluster id)."""
    ids_by_shard: dict[str, set[str]] = {}
    for r in chosen:
        ids_by_shard.setdefault(r["shard"], set()).add(r["id"])
    shards = sorted(ids_by_shard)
    cols = ["id", "url", "text", column, "removed_stage"]
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for shard, table in zip(shards, read_ahead(lambda s: read_columns(pass_dir.removed(s), cols), shards)):
        mask = pc.and_(pc.is_in(table.column("id").cast(pa.string()), pa.array(sorted(ids_by_shard[shard]))),
                       pc.equal(table.column("removed_stage"), stage))
        for row in table.filter(pc.fill_null(mask, False)).to_pylist():
            out[(shard, str(row["id"]))] = row
    return out


def _kept_rows(pass_dir: PassDir, stage: str, column: str, wanted: dict[str, set[int]]) -> dict[int, dict[str, Any]]:
    """cluster id -> its kept document (id, url, text, shard), from the kept shards ``wanted`` names;
    a representative a later stage of the same pass removed, from that shard's removed/, said so."""
    shards = sorted(wanted)
    cols = ["id", "url", "text", column]
    out: dict[int, dict[str, Any]] = {}

    def holding(ids: set[int]) -> Any:
        lo, hi = min(ids), max(ids)

        def keep(pf: pq.ParquetFile, group: int) -> bool:
            meta = pf.metadata.row_group(group)
            at = pf.schema_arrow.get_field_index(column)
            st = meta.column(at).statistics if at >= 0 else None
            if st is None or not st.has_min_max:
                return at >= 0  # no statistics: read it; no column: nothing of ours
            return not (st.max < lo or st.min > hi)
        return keep

    def read(shard: str) -> tuple[pa.Table, pa.Table | None]:
        ids = wanted[shard]
        kept = read_columns(pass_dir.kept(shard), cols, holding(ids))
        found = set(pc.filter(kept.column(column), pc.is_in(kept.column(column), pa.array(sorted(ids), pa.int64())))
                    .to_pylist())
        later = None
        if ids - found and fs.file_exists(pass_dir.removed(shard)):  # a later stage of this pass removed it
            later = read_columns(pass_dir.removed(shard), cols + ["removed_stage", "removed_reason"], holding(ids - found))
        return kept, later

    for shard, (kept, later) in zip(shards, read_ahead(read, shards)):
        ids = pa.array(sorted(wanted[shard]), pa.int64())
        for row in kept.filter(pc.fill_null(pc.is_in(kept.column(column), ids), False)).to_pylist():
            out.setdefault(int(row[column]), {**row, "shard": shard})
        if later is not None:
            mask = pc.and_(pc.is_in(later.column(column), ids), pc.not_equal(later.column("removed_stage"), stage))
            for row in later.filter(pc.fill_null(mask, False)).to_pylist():
                where = f"kept by {stage}, removed later by {row['removed_stage']} ({row['removed_reason']})"
                out.setdefault(int(row[column]), {**row, "shard": shard, "where": where})
    return out


def _jaccard(a: str, b: str, ngram: int) -> tuple[float | None, bool]:
    """(the Jaccard of the two texts' word ``ngram``-gram sets, as the dedup normalizes words;
    whether their normalized words are the same)."""
    from refinery.dedup.text import shingle_hashes, word_hashes

    tokens = word_hashes([a, b])
    hashes, offsets = shingle_hashes(tokens, ngram)
    sa = np.unique(hashes[int(offsets[0]):int(offsets[1])])
    sb = np.unique(hashes[int(offsets[1]):int(offsets[2])])
    words = tokens.doc_offsets
    identical = bool(np.array_equal(tokens.word_hash[words[0]:words[1]], tokens.word_hash[words[1]:words[2]]))
    union = len(np.union1d(sa, sb))
    return (len(np.intersect1d(sa, sb)) / union if union else None), identical


def word_diff(removed: str, kept: str) -> list[dict[str, Any]]:
    """The first :data:`DIFF_SPANS` spans where the two texts' words differ (of their first
    :data:`DIFF_WORDS` words): ``{"at_word", "removed", "kept"}``, each side cut to
    :data:`DIFF_SPAN_CHARS` characters ("" where one side has nothing)."""
    wa, wb = removed.split()[:DIFF_WORDS], kept.split()[:DIFF_WORDS]
    spans = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        spans.append({"at_word": i1, "removed": _cut(" ".join(wa[i1:i2])), "kept": _cut(" ".join(wb[j1:j2]))})
        if len(spans) == DIFF_SPANS:
            break
    return spans


def _cut(text: str) -> str:
    return text if len(text) <= DIFF_SPAN_CHARS else text[: DIFF_SPAN_CHARS - 1] + "…"


def render_pairs(result: dict[str, Any]) -> list[str]:
    """The lines ``refinery stats RUN --pairs STAGE`` prints."""
    lines = [f"{result['stage']} ({result['kind']}): {result['removed']:,} removed; {len(result['pairs'])} sampled "
             f"pair(s), removed vs kept (read {result['read']['removed_shards']} removed and "
             f"{result['read']['kept_shards']} kept shard(s))"]
    for n, p in enumerate(result["pairs"], 1):
        r, k = p["removed"], p["kept"]
        figures = [f"estimated Jaccard {p['estimated_jaccard']:.3f}" if p["estimated_jaccard"] is not None else "",
                   f"true Jaccard {p['jaccard']:.3f}" if p["jaccard"] is not None else "",
                   "same words" if p["identical"] else ""]
        lines.append("")
        lines.append(f"#{n}  cluster {p['cluster_id']}" + "".join(f"  {f}" for f in figures if f))
        lines.append(f"  removed  {r['shard']} {r['id']}  {r['url'] or '(no url)'}  ({r['chars']:,} chars)")
        if k is None:
            lines.append(f"  kept     not found: {p['missing']}")
        else:
            lines.append(f"  kept     {k['shard']} {k['id']}  {k['url'] or '(no url)'}  ({k['chars']:,} chars)"
                         + ("" if k["where"] == "kept" else f"  [{k['where']}]"))
        for d in p["diff"]:
            lines.append(f"  diff at word {d['at_word']:,}:  - {d['removed'] or '∅'}  + {d['kept'] or '∅'}")
        lines.append(f"  removed: {_one_line(r['head'])}")
        if k is not None:
            lines.append(f"  kept:    {_one_line(k['head'])}")
    return lines


def _one_line(text: str, chars: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"

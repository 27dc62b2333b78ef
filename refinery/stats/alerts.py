"""Removals that look like a misconfiguration rather than a filter doing its job: one stage
removing nearly every document it saw, overall or of one language. A recipe whose Gopher stop
words stayed English removed 99% of a German corpus as ``stop_words`` while the run looked
healthy, and a stop-word list for German alone removed every French page of a German-French run
(found by adversarial testing); the funnel showed it, but nothing pointed at it."""

from __future__ import annotations

from typing import Any

#: stages whose job is to select: removing most of a crawl is what they are for (dedup on a
#: duplicate-heavy corpus too)
SELECTING_KINDS = frozenset({"language_id", "prescreen", "url_filter", "decontaminate"})
#: reasons that remove most documents by design (GPT-3's Pareto sampling keeps ~1-15%)
BY_DESIGN = frozenset({"pareto_sampled_out"})
#: documents a stage (or a language at a stage) must see before its share means anything
MIN_DOCS = 20
SHARE = 0.9


def _selecting(kind: object) -> bool:
    kind = str(kind)
    return kind in SELECTING_KINDS or kind.endswith(("_reader", "_dedup"))


def suspicious_removals(stats: dict[str, Any], min_docs: int = MIN_DOCS, share: float = SHARE,
                        input_name: str | None = None) -> list[str]:
    """One line per stage that removed at least ``share`` of the documents it saw (at least
    ``min_docs``), overall (for any of its reasons together), or of one language (by the run's
    language column); one for a finished run that kept nothing, or read nothing (naming
    ``input_name``, the run's input, when given)."""
    nothing = nothing_read(stats, input_name)
    if nothing:
        return [nothing]
    notes: list[str] = []
    flagged: set[str] = set()  # stages noted overall (or sampling by design): no per-language note
    stages = [s for s in stats.get("stages") or [] if isinstance(s, dict)]
    for st in stages:
        kind, name = st.get("kind") or st.get("stage"), st.get("stage") or st.get("name")
        seen = int(st.get("docs_in") or 0)
        if _selecting(kind) or seen < min_docs:
            continue
        removed = st.get("removed") or {}
        if sum(n for r, n in removed.items() if r in BY_DESIGN) * 2 >= sum(removed.values()) > 0:
            flagged.add(name)  # a sampler removing most by design: nor per language
            continue
        total = sum(n for r, n in removed.items() if r not in BY_DESIGN)
        if total >= share * seen:
            flagged.add(name)
            # one reason, or the reasons that make up the share (too_few_words and too_many_words
            # together removed 99% of a corpus and no reason alone reached 90%: found by testing)
            reasons = ", ".join(f"{n} as {r!r}" for r, n in sorted(removed.items(), key=lambda kv: -kv[1])
                                if r not in BY_DESIGN and n)
            notes.append(f"{name} removed {total} of the {seen} documents it saw ({reasons}): check its settings "
                         "for this corpus (language, thresholds)")
    # a name once: two passes of one dedup method share it, and the language rows add them up
    order = list(dict.fromkeys(st.get("stage") or st.get("name") for st in stages))
    kinds = {st.get("stage") or st.get("name"): st.get("kind") for st in stages}
    by_language = ((stats.get("languages") or {}).get("by_language") or {})
    for lang, row in by_language.items():
        removed = row.get("removed") or {}
        reached = int(row.get("docs_in") or 0)
        for name in order:
            n = int(removed.get(name, 0))
            kind = kinds.get(name)
            if not _selecting(kind) and name not in flagged and reached >= min_docs and n >= share * reached:
                notes.append(f"{name} removed {n} of the {reached} {lang!r} documents it saw: check its settings "
                             f"for {lang!r} (e.g. gopher_quality's stop_words)")
            reached -= n
    empty = _empty_corpus(stages, stats)
    return notes + ([empty] if empty else [])


def _empty_corpus(stages: list[dict[str, Any]], stats: dict[str, Any]) -> str | None:
    """A finished run that kept nothing, named with the stage that removed the most: selecting
    stages are exempt from the notes above, so a run whose prescreen removed every page of a real
    Japanese WARC ended "done" without a word (found by a new user's trial); the first sign was
    the training loader refusing an empty corpus."""
    read = int(stats.get("docs_read") or 0)
    if stats.get("partial") or read == 0 or stats.get("docs_kept") != 0:
        return None
    top = max(stages, key=lambda st: int(st.get("docs_removed") or 0), default=None)
    if not top or not int(top.get("docs_removed") or 0):
        return None
    reasons = ", ".join(f"{n} as {r!r}" for r, n in sorted((top.get("removed") or {}).items(), key=lambda kv: -kv[1]) if n)
    return (f"the corpus is empty: every one of the {read} documents read was removed; the most by "
            f"{top.get('stage') or top.get('name')} ({reasons}): check its settings for this corpus")


def nothing_read(stats: dict[str, Any], input_name: str | None = None) -> str | None:
    """A finished run whose input yielded no document (an empty WARC, a zero-row Parquet): it
    ended "done" with a funnel of zeros and no word (found by a new user's trial). Failed or set
    aside inputs have their own notes."""
    if (stats.get("partial") or int(stats.get("docs_read") or 0) or not stats.get("shards")
            or stats.get("failed_shards") or stats.get("set_aside_shards")):
        return None
    stages = [s for s in stats.get("stages") or [] if isinstance(s, dict)]
    reader = (stages[0].get("kind") or stages[0].get("stage")) if stages else "reader"
    skipped = stats.get("reader_skipped_records") or {}
    why = (f"; the {reader} skipped " + ", ".join(f"{n} as {r!r}" for r, n in sorted(skipped.items()) if n)
           if any(skipped.values()) else "")
    where = f"the input {input_name}" if input_name else "the input"
    return (f"nothing was read: {where} ({stats['shards']} shard(s)) yielded no documents{why}: is it empty, "
            "or not what the reader expects (WARC records, Parquet or JSONL rows)?")


def limited_run_note(manifest: dict[str, Any]) -> str | None:
    """One line when the run read a sample (``refinery run --limit N``), else None: a limited
    run's funnel, report and comparison read like the whole input's (a report of the demo at
    ``--limit 5`` said nothing of it outside the folded configuration table)."""
    limit = manifest.get("limit")
    if not limit:
        return None
    return (f"a sample run (--limit {int(limit):,}): at most {int(limit):,} documents read per input shard, "
            "so these figures cover a sample of the input, not all of it")

"""Registered domains of removed documents, counted per (stage, reason) and kept as a top-K.

The registered domain ("example.co.uk" for "news.example.co.uk") comes from tldextract's
*bundled* Public Suffix List snapshot: never fetched, never cached to disk. IPs, "localhost" and
unknown suffixes fall back to the host itself; rows without a URL count as ``(no url)``.

Merging top-K lists from several shards by addition is exact for every domain that made the
top-K of every shard that saw it, and a lower bound otherwise; ``other`` keeps the remainder
so the counts always add up to the number of removed documents. Keep K per shard (default 100)
comfortably above the K you display (15 in the report) and the shown ranking is reliable.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable

NO_URL = "(no url)"
_HOST = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.\-]*://)?(?:[^@/?#]*@)?(\[[^\]]*\]|[^:/?#]*)")


class DomainCounter:
    """Counts registered domains; host -> domain lookups are cached (one parse per host)."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}
        self._tld = None

    def _extractor(self):
        if self._tld is None:
            # the process's one suffix trie (~0.4 s to build): a counter per shard must not rebuild it
            from refinery.stages.url_filter import tld_extractor

            self._tld = tld_extractor()
        return self._tld

    def domain(self, url: str | None) -> str:
        if not url or not url.strip():
            return NO_URL
        m = _HOST.match(url.strip())
        host = (m.group(1) if m else "").lower().rstrip(".").strip("[]")
        if not host:
            return NO_URL
        cached = self._cache.get(host)
        if cached is None:
            r = self._extractor().extract_str(host)
            registered = getattr(r, "top_domain_under_public_suffix", None)
            if registered is None:  # tldextract < 5.3
                registered = r.registered_domain
            cached = registered or host
            if len(self._cache) < 200_000:  # bound memory on pathological shards
                self._cache[host] = cached
        return cached

    def count(self, urls: Iterable[str | None]) -> Counter:
        return Counter(self.domain(u) for u in urls)

    def __getstate__(self) -> dict[str, Any]:
        return {"_cache": {}, "_tld": None}


def top_k(counts: Counter | dict[str, int], k: int) -> dict[str, Any]:
    """``{"top": {domain: n} (at most k, by count then name), "other": n, "total": n}``."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = dict(items[:k])
    total = sum(counts.values())
    return {"top": top, "other": total - sum(top.values()), "total": total}


class TopDomainsMerge:
    """``{stage: {reason: top_k dict}}`` maps added one at a time by addition; :meth:`result` keeps the top ``k``."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.counts: dict[str, dict[str, Counter]] = {}
        self.totals: dict[str, dict[str, int]] = {}

    def add(self, m: dict[str, dict[str, dict[str, Any]]] | None) -> None:
        for stage, reasons in (m or {}).items():
            for reason, d in reasons.items():
                self.counts.setdefault(stage, {}).setdefault(reason, Counter()).update(d["top"])
                t = self.totals.setdefault(stage, {})
                t[reason] = t.get(reason, 0) + d["total"]

    def result(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for stage, reasons in self.counts.items():
            for reason, c in reasons.items():
                merged = top_k(c, self.k)
                merged["total"] = self.totals[stage][reason]
                merged["other"] = merged["total"] - sum(merged["top"].values())
                out.setdefault(stage, {})[reason] = merged
        return out


def merge_top_domains(maps: Iterable[dict[str, dict[str, dict[str, Any]]]], k: int) -> dict[str, dict[str, dict[str, Any]]]:
    """Merge ``{stage: {reason: top_k dict}}`` maps by addition, keeping the top ``k``."""
    merge = TopDomainsMerge(k)
    for m in maps:
        merge.add(m)
    return merge.result()

"""URL filtering, RefinedWeb style (paper section G.1).

A document is removed when its URL

1. belongs to a blocklisted domain (UT1 list of ~4.5M adult/malware/... domains), checked on the
   registered domain (``blocklisted_domain``) and on every longer suffix of the host down from
   the full host name (``blocklisted_subdomain``; UT1 entries cover their own subdomains);
2. is on the UT1 list of exact URLs (``blocklisted_url``);
3. contains a hard banned word among its words (``banned_word``);
4. contains at least ``soft_word_threshold`` distinct soft banned words (``soft_banned_words``;
   the metric is their count);
5. contains a strictly banned sub-word in its normalized form (letters and digits only,
   lowercased): inside one of its words, or across separators from a word's start to a word's
   end, or to that word with an s, es, ed or ing ending (``banned_subword``).

Words (3-5) are read after percent-decoding (``%20`` is a space, not part of the next word), and
hosts (1) are looked up in ASCII (IDNA punycode), as UT1 lists its international domains.

Domains on ``allowed_domains`` (or their subdomains) skip every check: RefinedWeb kept a curated
list of exceptions (e.g. Wikipedia pages whose URLs contain flagged words).

A document without a URL (text input without that field or column) has nothing to judge: it is
kept and counted (counter ``no_url``); ``missing_url: remove`` removes it (``missing_url``).

Evidence (``removed_evidence``): what the URL matched, for a reader judging a removal from its
sample (word lists over URLs have false positives: "sussex", "essex-video"). The list entry for
the blocklists (``example.com (UT1 list)``, ``example.com (extra_domains)``, the listed
``host/path``), the matched words for the word lists (``porn``; ``babes, hot`` for the soft words)
and the sub-word with the word(s) it was found in (``"xxx" in "freexxxvideos"``, separators as
written). Made for removed documents only.

The UT1 list ships inside the datatrove wheel (``datatrove/assets/url_filterblacklistsv0_3_0.tar.gz``).
A Python set of 4.5M strings costs ~500 MB and several seconds per worker process, so instead we
build once a sorted ``uint64`` array of xxh3-64 hashes, cache it as ``.npy`` and memory-map it:
every worker on a machine shares the same page-cache pages and a lookup is one binary search.
With 4.5M entries the chance that an innocent host collides with some blocklisted hash is about
4.5e6 / 2**64 ~ 2.4e-13 per lookup, i.e. never in practice.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib.util
import itertools
import os
import re
import tarfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa

from refinery.stages.base import Stage, clip_evidence, with_decision

BLOCKLIST_TARBALL = "url_filterblacklistsv0_3_0.tar.gz"
#: bump when the cached array format or normalisation changes, so stale caches are not reused
CACHE_FORMAT = 1
RESOURCES = Path(__file__).resolve().parent.parent / "resources" / "url_filter"

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_ALNUM_RUN = re.compile(r"[a-z0-9]+")  # the words _NON_ALNUM splits, with where they are
# scheme? userinfo? host (or [ipv6]) port? path query?
_URL_PARTS = re.compile(
    r"^\s*(?:[a-zA-Z][a-zA-Z0-9+.\-]*://)?(?:[^/?#@]*@)?(\[[^\]/?#]*\]|[^/?#:]*)(?::[^/?#]*)?([^?#]*)(\?[^#]*)?"
)


def _hash(s: str) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(s.encode("utf-8", "surrogatepass"))


def _normalize_word(word: str) -> str:
    return _NON_ALNUM.sub("", word.lower())


def _read_word_list(path: Path) -> set[str]:
    """Words normalised like the URL (lowercase alphanumerics). As in datatrove, lines starting
    with ``#`` are comments (this drops e.g. ``#horny``, which RefinedWeb's list has commented out)."""
    words = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                word = _normalize_word(line)
                if word:
                    words.add(word)
    return words


def _ascii_host(host: str) -> str:
    """The host in ASCII (IDNA punycode, as the UT1 blocklist writes all its international
    domains): "продадим-квартиру-в-ипотеке.рф" is listed as "xn--...xn--p1ai" and was missed."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:  # a label IDNA 2003 refuses: looked up as written
        return host


def _banned_subword(subword_re: re.Pattern[str], lowered_url: str) -> str | None:
    """The evidence of a banned sub-word in the URL's letters and digits (``"xxx" in
    "freexxxvideos"``), or None: inside one of its words ("freeporn"), or across separators only
    from a word's start to that word's end or a short ending of it ("big-black", "call-girls").
    Across separators from inside a word, "update-rapeseed" held "daterape", "essex-video"
    "sexvideo", "bootstrap-onboarding" "strapon" (found by adversarial testing)."""
    joined = _NON_ALNUM.sub("", lowered_url)
    m = subword_re.search(joined)
    if m is None:  # most URLs: the words' places are found only for a match
        return None
    runs = list(_ALNUM_RUN.finditer(lowered_url))
    edges = list(itertools.accumulate((r.end() - r.start() for r in runs), initial=0))  # word boundaries, ascending
    while m is not None:
        k = bisect.bisect_left(edges, m.end())  # edges[k]: the end of the word the match ends in
        inside = edges[k - 1] <= m.start()  # no boundary strictly inside the match
        # across separators: from a word's start to a word's end, or to a short ending of it
        # ("call-girls", "blow-jobs": plurals are how such URLs are spelled)
        if inside or (m.start() in edges and joined[m.end():edges[k]] in _SHORT_ENDINGS):
            first = bisect.bisect_right(edges, m.start()) - 1  # the word the match starts in
            words = lowered_url[runs[first].start():runs[k - 1].end()]  # as written, separators too
            return clip_evidence(f'"{m.group()}" in "{words}"')
        m = subword_re.search(joined, m.start() + 1)
    return None


#: what a word may run on with past a banned sub-word that crosses separators: these endings
#: only ("call-girls"); any 1-3 letters let "nashville-hot-chicken" ("hot chick" + "en") and
#: "free-sexton" go (found by adversarial testing)
_SHORT_ENDINGS = frozenset({"", "s", "es", "ed", "ing"})


def _substring_regex(words: Iterable[str]) -> re.Pattern[str] | None:
    """One regex matching any of ``words`` as a substring, factored as a trie so the engine does
    not try 134 alternatives at every position (~4 us per URL instead of ~25 us)."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = True

    def emit(node: dict[str, Any]) -> str:
        if "" in node:  # a shorter word already matched: longer ones add nothing to a search
            return ""
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items())]
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    if not trie:
        return None
    return re.compile(emit(trie))


def _normalize_list_url(entry: str) -> str:
    """UT1 ``urls`` entries are ``host/path`` without scheme; compare lowercased host without
    ``www.`` plus the path as written, without trailing slash."""
    m = _URL_PARTS.match(entry)
    host = m.group(1).lower().rstrip(".") if m else ""
    if host.startswith("www."):
        host = host[4:]
    return (host + (m.group(2) if m else "")).rstrip("/")


def datatrove_blocklist_path() -> Path:
    """Path of the UT1 tarball inside the installed datatrove package (datatrove is not imported)."""
    spec = importlib.util.find_spec("datatrove")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "assets" / BLOCKLIST_TARBALL
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"URL blocklist {BLOCKLIST_TARBALL} not found: it ships inside the datatrove wheel; "
        "install it with `pip install --no-deps datatrove==0.10.1` (or set use_blocklist: false)"
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("REFINERY_CACHE") or Path.home() / ".cache" / "refinery")


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` by a sort: numpy 2's hash-based ``np.unique`` took 22-35 s on the
    4.5M domain hashes (a loaded 2-core VM, numpy 2.4), the sort ~0.5 s; the same array."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def build_blocklist_arrays(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique xxh3-64 hashes of the tarball's ``domains`` and (normalised) ``urls``."""
    import xxhash

    h = xxhash.xxh3_64_intdigest
    domains = urls = None
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if member.name not in ("domains", "urls") or not member.isfile():
                continue
            f = tar.extractfile(member)
            assert f is not None
            if member.name == "domains":
                # streamed line by line: peak memory ~2 hash arrays (~75 MB), not 4.5M bytes objects
                stripped = (line.strip().lower().rstrip(b".") for line in f)
                hashes = np.fromiter((h(x) for x in stripped if x), dtype=np.uint64)
                domains = _sorted_unique(hashes)
            else:
                lines = f.read().decode("utf-8", "replace").splitlines()
                hashed = (_hash(_normalize_list_url(x)) for x in lines if x.strip())
                urls = _sorted_unique(np.fromiter(hashed, dtype=np.uint64))
    if domains is None or urls is None:
        raise ValueError(f"{tarball} lacks the 'domains' or 'urls' member")
    return domains, urls


def load_blocklist(tarball: Path, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped (domains, urls) hash arrays, building the cache on first use.

    The cache is keyed by the tarball's size and mtime; files are written to a temporary name and
    published with ``os.replace`` so concurrent workers never read a half-written array, and a
    ``flock`` makes the other workers of a machine wait for the first builder instead of all
    building at once.
    """
    st = tarball.stat()
    key = f"ut1-v{CACHE_FORMAT}-{st.st_size}-{st.st_mtime_ns}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    domains_path = cache_dir / f"{key}-domains.npy"
    urls_path = cache_dir / f"{key}-urls.npy"
    if not (domains_path.is_file() and urls_path.is_file()):
        with open(cache_dir / f"{key}.lock", "w") as lock:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)
            except (ImportError, OSError):  # no flock (e.g. Windows, some network FS): just build
                pass
            if not (domains_path.is_file() and urls_path.is_file()):
                domains, urls = build_blocklist_arrays(tarball)
                _save_atomic(urls_path, urls)
                _save_atomic(domains_path, domains)
    return np.load(domains_path, mmap_mode="r"), np.load(urls_path, mmap_mode="r")


def _contains(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    if len(sorted_hashes) == 0 or len(hashes) == 0:
        return np.zeros(len(hashes), dtype=bool)
    idx = np.searchsorted(sorted_hashes, hashes)
    idx[idx == len(sorted_hashes)] = 0
    return np.asarray(sorted_hashes[idx]) == hashes


# Per-process caches. The executors send each shard a freshly unpickled stage (lazy resources
# dropped), so without these every shard re-parsed the Public Suffix List (~0.1-0.3 s: tldextract
# builds a trie of ~9k rules) and re-opened the blocklist arrays.
_PROCESS_CACHE: dict[Any, Any] = {}
_PROCESS_CACHE_LOCK = threading.Lock()


def tld_extractor() -> Any:
    """The process's ``tldextract.TLDExtract`` on the bundled Public Suffix List snapshot (never
    fetched, no cache written), built once and shared by every UrlFilter of the process."""
    with _PROCESS_CACHE_LOCK:
        tld = _PROCESS_CACHE.get("tld")
        if tld is None:
            from tldextract import TLDExtract

            tld = TLDExtract(suffix_list_urls=(), cache_dir=None)
            tld.extract_str("example.com")  # builds the suffix trie now, once
            _PROCESS_CACHE["tld"] = tld
        return tld


def _process_blocklist(tarball: Path, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_blocklist`, memoised per process on (tarball, its size and mtime, cache dir)."""
    st = tarball.stat()
    key = ("blocklist", str(tarball), st.st_size, st.st_mtime_ns, str(cache_dir))
    with _PROCESS_CACHE_LOCK:
        arrays = _PROCESS_CACHE.get(key)
        if arrays is None:
            arrays = _PROCESS_CACHE[key] = load_blocklist(tarball, cache_dir)
        return arrays


class UrlFilter(Stage):
    """Remove documents whose URL is blocklisted or contains banned words (RefinedWeb G.1)."""

    kind = "url_filter"
    libraries = ("tldextract",)
    reads_text = False

    def __init__(
        self,
        soft_word_threshold: int = 2,
        use_blocklist: bool = True,
        extra_domains: list[str] | None = None,
        allowed_domains: list[str] | None = None,
        allowed_words: list[str] | None = None,
        cache_dir: str | None = None,
        missing_url: str = "keep",
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if soft_word_threshold < 1:
            raise ValueError("soft_word_threshold must be >= 1")
        if missing_url not in ("keep", "remove"):
            raise ValueError(f"missing_url must be 'keep' or 'remove', not {missing_url!r}")
        # a document without a URL (text input: books, a dataset without that column) cannot be
        # judged by it; removing them all as "missing_url" emptied such runs (found by adversarial
        # testing). Kept and counted (counter no_url), unless told to remove them
        self.missing_url = missing_url
        self.soft_word_threshold = soft_word_threshold
        self.use_blocklist = use_blocklist
        if use_blocklist:  # the UT1 list ships in the datatrove wheel: its version is the list's
            self.libraries = ("tldextract", "datatrove")
        self.extra_domains = {d.strip().lower().rstrip(".") for d in extra_domains or [] if d.strip()}
        self.allowed_domains = {d.strip().lower().rstrip(".") for d in allowed_domains or [] if d.strip()}
        self.cache_dir = cache_dir
        # small lists (a few hundred words): built eagerly, pickled with the stage
        # RefinedWeb's lists are English: words of other languages that they ban ("sexo", the
        # Spanish and Portuguese "sex" of every census page; "kike", a Spanish first name; "shota",
        # a Japanese one) are taken off them here (found by adversarial testing)
        self.allowed_words = {_normalize_word(w) for w in allowed_words or [] if w.strip()}
        lists = {name: _read_word_list(RESOURCES / f"{name}.txt")
                 for name in ("banned_words", "soft_banned_words", "banned_subwords")}
        unknown = sorted(self.allowed_words - set().union(*lists.values()))
        if unknown:  # a typo would leave the word banned without a word
            raise ValueError(f"allowed_words {unknown[:5]} are on none of the URL filter's word lists")
        self.banned_words, self.soft_banned_words, self.banned_subwords = (
            lists[name] - self.allowed_words for name in ("banned_words", "soft_banned_words", "banned_subwords"))
        if use_blocklist:
            datatrove_blocklist_path()  # fail at construction (config time), not mid-run

    # -- lazily loaded resources ------------------------------------------------------------
    def _resources(self) -> tuple[Any, np.ndarray | None, np.ndarray | None, re.Pattern[str] | None]:
        if getattr(self, "_lazy_tld", None) is None:
            self._lazy_tld = tld_extractor()
            self._lazy_subwords = _substring_regex(sorted(self.banned_subwords))
            self._lazy_domains = self._lazy_urls = None
            if self.use_blocklist:
                # resolved here, not pickled: a worker machine may install datatrove elsewhere
                cache = Path(self.cache_dir) if self.cache_dir else default_cache_dir() / "url_filter"
                self._lazy_domains, self._lazy_urls = _process_blocklist(datatrove_blocklist_path(), cache)
        return self._lazy_tld, self._lazy_domains, self._lazy_urls, self._lazy_subwords

    def load(self) -> float:
        """Load (building the cache if needed) now; returns seconds taken."""
        t0 = time.perf_counter()
        self._resources()
        return time.perf_counter() - t0

    def _registered_domain(self, tld: Any, host: str) -> str:
        r = tld.extract_str(host)
        registered = getattr(r, "top_domain_under_public_suffix", None)
        if registered is None:  # tldextract < 5.3
            registered = r.registered_domain
        return registered or host  # IPs, "localhost", unknown suffixes: the host itself

    # -- processing -----------------------------------------------------------------------
    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        tld, domains, urls_bl, subword_re = self._resources()
        urls = batch.column("url").to_pylist() if "url" in batch.schema.names else [None] * batch.num_rows
        n = len(urls)
        reasons: list[str | None] = [None] * n
        metrics: list[float | None] = [None] * n
        evidence: list[str | None] = [None] * n  # what the URL matched, on removed rows only

        # pass 1: parse hosts, collect every blocklist candidate string for one vectorized lookup
        registered_cache: dict[str, str] = {}
        cand_strings: list[str] = []
        cand_row: list[int] = []
        cand_kind: list[int] = []  # 0 = registered domain, 1 = longer host suffix, 2 = exact url
        checked: list[int] = []
        no_url = 0
        for i, url in enumerate(urls):
            if not url or not url.strip():
                no_url += 1
                if self.missing_url == "remove":
                    reasons[i] = "missing_url"
                continue
            if url[0] == "<" or url[0].isspace():  # WARC/1.1 writers may bracket the target URI
                url = urls[i] = url.strip().strip("<>")
            m = _URL_PARTS.match(url)
            host = _ascii_host(m.group(1).lower().rstrip(".").strip("[]")) if m else ""
            labels = host.split(".") if host else []
            if self.allowed_domains and any(".".join(labels[j:]) in self.allowed_domains for j in range(len(labels))):
                continue  # allow-list wins over every check
            checked.append(i)
            if not host:
                continue
            registered = registered_cache.get(host)
            if registered is None:
                registered = registered_cache[host] = self._registered_domain(tld, host)
            n_reg = registered.count(".") + 1
            for j in range(len(labels) - n_reg + 1):
                cand_strings.append(".".join(labels[j:]))
                cand_row.append(i)
                cand_kind.append(1 if j < len(labels) - n_reg else 0)
            bare = host[4:] if host.startswith("www.") else host
            path = m.group(2)  # type: ignore[union-attr]
            key = (bare + path).rstrip("/")
            cand_strings.append(key)
            cand_row.append(i)
            cand_kind.append(2)
            if m.group(3) and len(m.group(3)) > 1:  # type: ignore[union-attr]
                cand_strings.append(bare + path + m.group(3))  # type: ignore[union-attr]
                cand_row.append(i)
                cand_kind.append(2)

        # pass 2: blocklist lookups (registered domain beats subdomain beats url, as the order above)
        if cand_strings:
            kinds = np.asarray(cand_kind, dtype=np.int8)
            hit = np.zeros(len(cand_strings), dtype=bool)
            if domains is not None or urls_bl is not None:
                hashes = np.fromiter((_hash(s) for s in cand_strings), dtype=np.uint64, count=len(cand_strings))
                is_dom = kinds < 2
                if domains is not None:
                    hit[is_dom] = _contains(domains, hashes[is_dom])
                if urls_bl is not None:
                    hit[~is_dom] = _contains(urls_bl, hashes[~is_dom])
            if self.extra_domains:
                for c in np.flatnonzero(kinds < 2):
                    if cand_strings[c] in self.extra_domains:
                        hit[c] = True
            best: dict[int, tuple[int, int]] = {}  # row -> (kind, candidate) of its first-ranked hit
            for c in np.flatnonzero(hit):
                row, k = cand_row[c], int(kinds[c])
                if k < best.get(row, (3, 0))[0]:
                    best[row] = (k, int(c))
            names = ("blocklisted_domain", "blocklisted_subdomain", "blocklisted_url")
            for row, (k, c) in best.items():
                reasons[row] = names[k]
                entry = cand_strings[c]
                listed = "extra_domains" if k < 2 and entry in self.extra_domains else "UT1 list"
                evidence[row] = f"{clip_evidence(entry, 117 - len(listed))} ({listed})"  # 120 with the list's name

        # pass 3: word lists on what is left
        threshold = self.soft_word_threshold
        for i in checked:
            if reasons[i] is not None:
                continue
            # words as written: "%20porn" was the word "20porn", and 557 of 1,000 adult paths joined
            # by "-" were caught against 168 joined by "%20" (found by adversarial testing)
            lowered = (unquote(urls[i]) if "%" in urls[i] else urls[i]).lower()
            words = set(_NON_ALNUM.split(lowered))
            if not words.isdisjoint(self.banned_words):
                reasons[i] = "banned_word"
                evidence[i] = clip_evidence(", ".join(sorted(words & self.banned_words)))
                continue
            soft = words & self.soft_banned_words
            if len(soft) >= threshold:
                reasons[i] = "soft_banned_words"
                metrics[i] = float(len(soft))
                evidence[i] = clip_evidence(", ".join(sorted(soft)))
                continue
            found = _banned_subword(subword_re, lowered) if subword_re is not None else None
            if found is not None:
                reasons[i] = "banned_subword"
                evidence[i] = found

        self.count("no_url", no_url)
        return with_decision(batch, reasons, metrics, evidence=evidence)

    def metric_columns(self) -> list[str]:
        return []  # decision only; the soft-word count goes to the _metric column

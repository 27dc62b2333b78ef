"""Input manifests: Common Crawl's ``warc.paths.gz`` (one object key per line) or any text file
of input paths, local or on S3, and Common Crawl's subsets.

A crawl holds more than its pages: next to ``warc/`` every segment has ``robotstxt/``,
``crawldiagnostics/`` (redirects, 404s), ``wat/`` and ``wet/``. Those are not documents to
curate, so a manifest or a crawl directory is cut to the ``warc`` subset unless asked otherwise.
"""

from __future__ import annotations

import gzip
import posixpath
import re

from refinery.io import fs

#: file names that are manifests rather than inputs: ``warc.paths.gz``, ``my-inputs.paths``
MANIFEST_SUFFIXES = (".paths", ".paths.gz", ".paths.txt")
#: Common Crawl's layout: ``crawl-data/<crawl>/segments/<segment>/<subset>/<file>``
CC_SUBSETS = ("warc", "wat", "wet", "robotstxt", "crawldiagnostics")
_CC_SUBSET = re.compile(r"(?:^|/)segments/[^/]+/(" + "|".join(CC_SUBSETS) + r")/[^/]+$")
DEFAULT_SUBSETS = ("warc",)


class ManifestError(ValueError):
    """The manifest cannot be used (the message names it and the line)."""


def is_manifest(uri: str) -> bool:
    return uri.lower().endswith(MANIFEST_SUFFIXES)


def cc_subset(path: str) -> str | None:
    """``"warc"`` for ``.../segments/<seg>/warc/<file>``; None outside Common Crawl's layout."""
    match = _CC_SUBSET.search(path)
    return match.group(1) if match else None


def in_subsets(path: str, subsets: tuple[str, ...] = DEFAULT_SUBSETS) -> bool:
    """Whether ``path`` belongs to one of ``subsets`` (paths outside Common Crawl's layout always do)."""
    subset = cc_subset(path)
    return subset is None or subset in subsets


def manifest_base(uri: str) -> str:
    """Where a manifest's relative entries live: Common Crawl's keys (``crawl-data/...``) are
    relative to the bucket, so for a manifest on S3 that is the bucket root; for a local manifest,
    its directory."""
    if fs.is_s3(uri):
        bucket = uri[len("s3://"):].split("/", 1)[0]
        return f"s3://{bucket}"
    return posixpath.dirname(uri) or "."


def read_manifest(uri: str, base: str | None = None, subsets: tuple[str, ...] = DEFAULT_SUBSETS) -> list[str]:
    """The input URIs a manifest lists, in its order, cut to ``subsets``; relative entries are
    joined to ``base`` (default: :func:`manifest_base`). Blank lines and ``#`` comments are skipped."""
    try:
        raw = fs.read_bytes(uri)
    except (fs.StorageError, OSError) as exc:
        raise ManifestError(f"cannot read input manifest {uri}: {str(exc).splitlines()[0]}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ManifestError(f"input manifest {uri} is not valid gzip: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"input manifest {uri} is not UTF-8 text (byte {exc.start})") from None
    root = (base or manifest_base(uri)).rstrip("/")
    listed: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if "\x00" in entry or entry.startswith("/") and fs.is_s3(root):
            raise ManifestError(f"input manifest {uri}, line {number}: not a path: {entry[:80]!r}")
        full = entry if fs.is_s3(entry) or entry.startswith("/") else f"{root}/{entry}"
        if not in_subsets(full, subsets) or full in seen:
            continue
        seen.add(full)
        listed.append(full)
    if not listed:
        raise ManifestError(f"input manifest {uri} lists no input in subset(s) {', '.join(subsets)}")
    return listed


def common_root(uris: list[str]) -> str:
    """The deepest directory holding every URI (shard names are paths relative to it)."""
    if not uris:
        return ""
    scheme = "s3://" if uris[0].startswith("s3://") else ""
    parts = [u[len(scheme):].split("/")[:-1] for u in uris]
    common = parts[0]
    for p in parts[1:]:
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    return scheme + "/".join(common)

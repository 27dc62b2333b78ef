"""PII redaction: e-mail addresses, IP addresses, phone numbers and payment-card numbers are
replaced by typed placeholders (``<EMAIL>``, ``<IP_ADDRESS>``, ``<PHONE>``, ``<CREDIT_CARD>``).

The stage rewrites ``text`` and keeps every document (optionally it removes documents with more
than ``max_replacements`` replacements: contact directories, leaked lists). Detection, per type:

* **email**: around each ``@`` (found with ``str.find``, never a regex scan from every position,
  so a megabyte-long token costs linear time): a local part of <= 64 characters on the left, a
  domain with a letters-only TLD on the right; image names such as ``logo@2x.png`` and git's SSH
  addresses (``git@github.com:org/repo.git``) are not mail.
* **ip_address**: IPv4 dotted quads and IPv6, each validated with :mod:`ipaddress`. By default
  only public addresses (``is_global``; IPv6 in ``2000::/3``) are personal data: ``127.0.0.1``,
  ``192.168.1.1`` or a netmask are technical content and stay. Version-like quads (preceded by
  "version", "v", "build", "section" ..., by a software name, as in ``Linux 2.6.32.12``, or all
  four parts single digits, as in ``1.2.3.4``) stay.
* **phone**: Google's libphonenumber port (``phonenumbers.PhoneNumberMatcher``, leniency VALID:
  the number must be a real, assignable number of its region), national formats read in
  ``phone_region``, ``+CC`` international numbers in any region. The matcher is slow Python
  (~0.5 ms a parse), so it only runs on short windows around digit runs that fit the region's
  metadata (lengths, national number pattern) or start with "+"; dates, decimals, thousands-
  grouped integers, page lists, ISBNs, DOIs, path parts and bare digit runs are not phones. Documents
  without a run of >= 7 digits cost one vectorized RE2 test per batch (see docs/pii.md).
* **credit_card**: 13-19 digits, optionally grouped with one consistent space or hyphen, with a
  known issuer prefix (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay) and a valid Luhn
  checksum.

Spans are found on the original text and overlaps resolved by priority (email > ip > card >
phone), so one placeholder never feeds another detector. A document needing more than
``max_phone_candidates`` libphonenumber checks (a number dump) is removed as ``pii_scan_limit``:
redacting it would cost unbounded time, and shipping it half-redacted would be worse.

Columns: ``pii_replacements`` (int32, every row; 0 for null/empty text). Counters
(:meth:`PiiRedactor.take_counters`): replacements per type and ``docs_redacted``.
Reasons: ``too_much_pii`` (only with ``max_replacements``; metric: replacements),
``pii_scan_limit`` (metric: the budget exceeded, ``max_phone_candidates`` + 1).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from refinery.stages import checks
from refinery.stages.base import Stage, with_decision

COUNT_COLUMN = "pii_replacements"
TYPES: tuple[str, ...] = ("email", "ip_address", "phone", "credit_card")
DEFAULT_PLACEHOLDERS: dict[str, str] = {
    "email": "<EMAIL>",
    "ip_address": "<IP_ADDRESS>",
    "phone": "<PHONE>",
    "credit_card": "<CREDIT_CARD>",
}
# overlap resolution: lower wins (an e-mail "john.1234567890@x.com" is not a phone number)
_PRIORITY = {"email": 0, "ip_address": 1, "credit_card": 2, "phone": 3}

# -- pre-filters: which detectors a document needs at all. Per batch they run as RE2 in Arrow
# (vectorized C++, ~1 GB/s), so documents without an "@", a dotted quad, "::" or a run of >= 7
# digits cost no Python; the same patterns (Python flavour) serve single-document calls.
_PRE_RE2: dict[str, str] = {
    "email": r"[^\s@]@[A-Za-z0-9\-]+\.",  # any script before the "@" (a Cyrillic local part was skipped)
    "ipv4": r"(?:^|[^0-9A-Za-z_.])[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]",
    "ipv6": r"[0-9A-Fa-f]::|::[0-9A-Fa-f]|(?:[0-9A-Fa-f]{1,4}:){5}[0-9A-Fa-f]",
    # >= 7 digits in a phone-like run: every phone number (libphonenumber's useful ones) and card
    "digits": r"\p{Nd}(?:[\s().\-/\x{2010}-\x{2015}]{0,3}\p{Nd}){6}",
}
_PRE_PY: dict[str, re.Pattern[str]] = {
    k: re.compile(v.replace(r"\p{Nd}", r"\d").replace(r"\x{2010}-\x{2015}", "\u2010-\u2015"))
    for k, v in _PRE_RE2.items()
}

# -- e-mail -----------------------------------------------------------------------------------
# letters and digits of any script (RFC 6531): an ASCII-only local part matched the tail of
# "maría.lópez@ejemplo.es" and left "maría.ló" in the text, reported redacted (adversarial testing)
# (combining marks too: Devanagari vowel signs, decomposed accents)
_LOCAL_CHARS = r"\w\u0300-\u036f\u0900-\u0dff!#$%&'*+/=?^`{|}~\-"
# the local part, anchored at the "@" (searched on <= 64 characters left of it)
# (starting with a letter, digit or "_": "'bob@example.com'" is quoted, not part of the address)
_LOCAL_RE = re.compile(rf"\w(?:[{_LOCAL_CHARS}.]*[{_LOCAL_CHARS}])?$")
#: Chinese, Japanese and Korean characters: written without a space before an address
#: ("連絡先はinfo@example.jpまで"), they are the sentence, not the local part, unless it is all CJK
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_DOMAIN_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![A-Za-z0-9\-]|\.[A-Za-z0-9])")
_NOT_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "css", "js", "html", "php"})

# -- IP addresses -----------------------------------------------------------------------------
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.[0-9])")
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.[0-9])"
)
# what makes a dotted quad a version or a section number, just before it
#: a user agent's product token against its version ("Chrome/120.0.0.0", "Firefox/115.0.2.1"):
#: the browsers' and HTTP clients' own names, or any token in a string that began "Mozilla/".
#: Not any "word/": "gateway/81.2.69.143" is a host (found by the review of the first version)
_UA_PRODUCTS = ("mozilla", "chrome", "chromium", "crios", "firefox", "fxios", "safari", "applewebkit", "version",
                "mobile", "edg", "edge", "edga", "edgios", "opr", "opera", "samsungbrowser", "yabrowser", "ucbrowser",
                "vivaldi", "brave", "gecko", "trident", "msie", "konqueror", "khtml", "presto", "curl", "wget",
                "python-requests", "okhttp", "java", "dalvik", "go-http-client", "postmanruntime", "electron")
_PRODUCT_SLASH = re.compile(r"(?<![\w./:-])(" + "|".join(re.escape(p) for p in _UA_PRODUCTS) + r")/$", re.IGNORECASE)
_USER_AGENT = re.compile(r"Mozilla/\d")
_VERSION_CONTEXT = re.compile(
    r"(?<![A-Za-z])(?:version|ver|v|release|build|rev|revision|firmware|update|patch|kernel|section|sec|chapter|"
    r"clause|article|art|figure|fig|table|step|rule|item|paragraph|para|no|§)\.?\s*[:#]?\s*$",
    re.IGNORECASE,
)
#: software whose name, just before a dotted quad, makes it a version ("Python 3.11.4.0", "Linux
#: 2.6.32.12", "Firefox 2.0.0.16": 4-part versions that are valid public IPv4 addresses, redacted
#: before). Names only: commands that take a host stay out ("ssh", "ping", "curl", "telnet",
#: "nslookup"), and so do "server", "host", "node", "client", "listen", "ServerName" and the like, which
#: precede real addresses in logs and configs.
_SOFTWARE = (
    "python", "linux", "java", "jre", "jdk", "php", "perl", "ruby", "nodejs", r"node\.js", "golang", "gcc",
    "clang", "llvm", "windows", "macos", "osx", "ios", "android", "ubuntu", "debian", "fedora", "centos", "rhel",
    "freebsd", "openbsd", "netbsd", "firefox", "thunderbird", "seamonkey", "chrome", "chromium", "safari", "opera",
    "msie", "flash", r"flash\s+player", "acrobat", r"adobe\s+reader", r"acrobat\s+reader", "office", "outlook",
    "skype", "itunes", "vlc", "nginx", "apache", "httpd", "tomcat", "mysql", "mariadb", "postgresql", "sqlite",
    "redis", "mongodb", "openssl", "openssh", "framework", r"\.net", "bios", "wordpress", "drupal", "joomla",
    "magento",
)
_SOFTWARE_BEFORE = re.compile(r"(?<![\w.\-/])(?:" + "|".join(_SOFTWARE) + r")(?:[ \t]+|-)$", re.IGNORECASE)
#: a port after the quad: an address, never a version ("redis 81.2.69.160:6379", "apache 81.2.69.161:80";
#: none of 172 "quad:digits" in /usr/share/doc, the venv's docs, cc_docs and the trafilatura pages is a version)
_PORT_AFTER = re.compile(r":\d")
_GLOBAL_V6 = ipaddress.IPv6Network("2000::/3")

# -- payment cards ----------------------------------------------------------------------------
_CARD_RE = re.compile(r"(?<![\d\-.,+])\d(?:[ \-]?\d){12,18}(?!\d|[\-.,]\d)")
_CARD_PREFIXES: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    # (first prefix, last prefix, lengths): prefixes compared on as many digits as they have
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)), (2221, 2720, (16,)),  # Mastercard
    (34, 34, (15,)), (37, 37, (15,)),  # American Express
    (6011, 6011, (16, 17, 18, 19)), (644, 649, (16, 17, 18, 19)), (65, 65, (16, 17, 18, 19)),  # Discover
    (3528, 3589, (16, 17, 18, 19)),  # JCB
    (300, 305, (14, 16, 17, 18, 19)), (36, 36, (14, 16, 17, 18, 19)), (38, 39, (16, 17, 18, 19)),  # Diners
    (62, 62, (16, 17, 18, 19)),  # UnionPay
)

# -- phones -----------------------------------------------------------------------------------
# a run of digits and phone separators (one scan finds card and phone candidates); no
# look-behind, so the regex engine skips non-digits fast; split into pieces afterwards
_NUM_RE = re.compile(r"[+(]?\d[\d \t\u00a0()\-/.\u2010-\u2015]*\d")
_WINDOW_PAD = 8
_START_COST = 20  # cheap run starts per libphonenumber check in the per-document budget
_ISBN_RE = re.compile(r"ISBN(?:-1[03])?:?\s*$", re.IGNORECASE)
# an ISBN-10 as books cite it without the "ISBN" label ("Suhrkamp, Frankfurt 1992, 3-518-38611-5"):
# four hyphenated groups ending in one check character, a grouping no phone number has
_ISBN10_RE = re.compile(r"\d{1,5}-\d{1,7}-\d{1,6}-[\dX]")


def _is_isbn10(piece: str) -> bool:
    """A hyphenated ISBN-10: ten characters in four groups, the last a single check character
    (citations carry mistyped check digits too, so it is not verified). Found by adversarial
    testing: such ISBNs whose digits also form a valid US number were redacted as phones."""
    return _ISBN10_RE.fullmatch(piece) is not None and len(piece) - piece.count("-") == 10
# where a candidate breaks: dates (below) and decimals ("35.207487 -97.447906": coordinates)
_DECIMAL = r"\d*\.\d{5,}"
_DIGITS_RE = re.compile(r"\d+")
# integers grouped by thousands ("8 045 311 447"); phones are not grouped 1-3/3/3
_GROUPED_INT_RE = re.compile(r"\d{1,3}(?:[ \u00a0\u202f.,]\d{3}){2,}")
# dates with a four-digit year: D.M.YYYY, M/D/YYYY, YYYY-MM-DD (libphonenumber skips some only)
_DAY, _MONTH, _YEAR = r"(?:0?[1-9]|[12][0-9]|3[01])", r"(?:0?[1-9]|1[0-2])", r"(?:1[5-9]|20)[0-9]{2}"
_DATE_RE = re.compile(
    rf"(?<!\d)(?:{_DAY}[./-]{_MONTH}[./-]{_YEAR}|{_MONTH}[./-]{_DAY}[./-]{_YEAR}|{_YEAR}[./-]{_MONTH}[./-]{_DAY})(?!\d)"
)


# where a run breaks into independent pieces: dates, decimals, sentence ends, wide gaps
_BREAK_RE = re.compile(f"{_DATE_RE.pattern}|{_DECIMAL}|\\.[ \\t\\u00a0]|[ \\t\\u00a0]{{3,}}")
_LEAD_JUNK = " \t\u00a0)-/.\u2010\u2011\u2012\u2013\u2014\u2015"
_TRAIL_JUNK = " \t\u00a0(-/.\u2010\u2011\u2012\u2013\u2014\u2015"


def _pieces(raw: str, offset: int) -> list[tuple[int, int]]:
    """Spans (in text coordinates) of the pieces of ``raw`` between breaks, without the
    separators at their ends."""
    out: list[tuple[int, int]] = []
    last = 0
    ends = [(m.start(), m.end()) for m in _BREAK_RE.finditer(raw)] if len(raw) > 9 else []
    for start, end in ends + [(len(raw), len(raw))]:
        piece = raw[last:start]
        stripped = piece.lstrip(_LEAD_JUNK)
        lead = len(piece) - len(stripped)
        stripped = stripped.rstrip(_TRAIL_JUNK)
        if stripped:
            out.append((offset + last + lead, offset + last + lead + len(stripped)))
        last = end
    return out


def _in_path(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is glued to a path or dotted name: "/" on either side, or
    "x." before / ".x" after."""
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    if before == "/" or after == "/":
        return True
    if before == "." and start > 1 and text[start - 2].isalnum():
        return True
    return after == "." and end + 1 < len(text) and text[end + 1].isalnum()


#: a DOI's registrant prefix ("10.1136/"): what follows it up to the next space is the DOI's
#: suffix, an identifier ("bmjopen-2016-011092" was redacted as a US phone number)
_DOI_PREFIX_RE = re.compile(r"\b10\.\d{4,9}/")


def _in_doi(text: str, start: int, reach: int = 300) -> bool:
    """Whether ``text[start]`` sits in a DOI's suffix: a DOI prefix between it and the nearest
    whitespace before it (looked for within ``reach`` characters)."""
    low = max(0, start - reach)
    space = max(text.rfind(" ", low, start), text.rfind("\n", low, start), text.rfind("\t", low, start))
    return _DOI_PREFIX_RE.search(text, space + 1 if space >= 0 else low, start) is not None


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum over a string of ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_issuer_ok(digits: str) -> bool:
    """A known issuer prefix with one of its lengths."""
    n = len(digits)
    for low, high, lengths in _CARD_PREFIXES:
        if n in lengths and low <= int(digits[: len(str(low))]) <= high:
            return True
    return False


class PiiRedactor(Stage):
    """Replace e-mail addresses, IP addresses, phone and card numbers by typed placeholders."""

    kind = "pii"
    libraries = ("phonenumbers",)
    rewrites_text = True
    removes = False
    #: the metric column read by the report for the ``max_replacements`` threshold
    threshold_params = {COUNT_COLUMN: ["max_replacements"]}
    reason_metrics = {"too_much_pii": COUNT_COLUMN}

    def __init__(
        self,
        email: bool = True,
        ip_address: bool = True,
        phone: bool = True,
        credit_card: bool = True,
        phone_region: str = "US",
        only_public_ips: bool = True,
        phone_bare_digits: bool = False,
        placeholders: dict[str, str] | None = None,
        max_replacements: int | None = None,
        max_phone_candidates: int | None = 1000,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.enabled = {"email": bool(email), "ip_address": bool(ip_address), "phone": bool(phone),
                        "credit_card": bool(credit_card)}
        region = str(phone_region).upper()
        if self.enabled["phone"]:
            import phonenumbers

            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"phone_region must be a two-letter region libphonenumber knows (e.g. US, GB, DE), "
                                 f"got {phone_region!r}")
        self.phone_region = region
        self.only_public_ips = bool(only_public_ips)
        # "4155550132" without "+" or separators: in real text mostly IDs, not phone numbers
        self.phone_bare_digits = bool(phone_bare_digits)
        unknown = sorted(set(placeholders or {}) - set(TYPES))
        if unknown:
            raise ValueError(f"placeholders: unknown type(s) {unknown}; known: {list(TYPES)}")
        self.placeholders = {**DEFAULT_PLACEHOLDERS, **(placeholders or {})}
        for kind, value in self.placeholders.items():
            if not isinstance(value, str):
                raise ValueError(f"placeholders.{kind} must be a string, got {value!r}")
        if max_replacements is not None:
            checks.at_least("max_replacements", max_replacements, 0)
        if max_phone_candidates is not None:
            checks.at_least("max_phone_candidates", max_phone_candidates, 1)
        self.max_replacements = max_replacements
        self.max_phone_candidates = max_phone_candidates
        self._starts = 0
        self._start_limit: int | None = None
        self._pii_counts: dict[str, int] = {}
        self._reset_counts()

    def unread_params(self) -> frozenset[str]:
        """The phone matcher's params with ``phone: false``; the number scan's budget with cards
        off too (no digit run is scanned); ``only_public_ips`` with ``ip_address: false``; the
        placeholder of every type that is off (``placeholders.phone``; session 51, h225)."""
        unread = {f"placeholders.{kind}" for kind, on in self.enabled.items() if not on}
        if not self.enabled["phone"]:
            unread |= {"phone_region", "phone_bare_digits"}
            if not self.enabled["credit_card"]:
                unread.add("max_phone_candidates")
        if not self.enabled["ip_address"]:
            unread.add("only_public_ips")
        return frozenset(unread)

    # -- counters -------------------------------------------------------------------------------
    def _reset_counts(self) -> None:
        self._pii_counts = {t: 0 for t in TYPES if self.enabled[t]}
        self._pii_counts["docs_redacted"] = 0

    def take_counters(self) -> dict[str, int]:
        """Replacements per enabled type (zeros included, so the report lists every type
        checked) and ``docs_redacted``, since the last call (the runner calls it per batch)."""
        counts = self._pii_counts
        self._reset_counts()
        return counts

    def metric_columns(self) -> list[str]:
        return [COUNT_COLUMN]

    # -- detection ------------------------------------------------------------------------------
    def find(self, text: str, flags: set[str] | None = None) -> tuple[list[tuple[int, int, str]], int]:
        """Non-overlapping ``(start, end, type)`` spans of PII in ``text``, in order, and the
        number of number candidates looked at (more than ``max_phone_candidates``: no spans).
        ``flags``: which pre-filters matched (computed here when not given)."""
        if flags is None:
            flags = {k for k, rx in _PRE_PY.items() if self._wants(k) and rx.search(text)}
        spans: list[tuple[int, int, str]] = []
        if "email" in flags:
            spans += _emails(text)
        if "ipv4" in flags or "ipv6" in flags:
            spans += self._ips(text, "ipv4" in flags, "ipv6" in flags)
        candidates = 0
        if "digits" in flags:
            found, candidates = self._numbers(text)
            if found is None:
                return [], candidates
            spans += found
        return _resolve(spans), candidates

    def _wants(self, prefilter: str) -> bool:
        if prefilter == "email":
            return self.enabled["email"]
        if prefilter in ("ipv4", "ipv6"):
            return self.enabled["ip_address"]
        return self.enabled["phone"] or self.enabled["credit_card"]

    def _ips(self, text: str, v4: bool = True, v6: bool = True) -> list[tuple[int, int, str]]:
        out = []
        if v4:
            for m in _IPV4_RE.finditer(text):
                s = m.group()
                parts = s.split(".")
                if all(len(p) == 1 for p in parts):
                    continue  # "1.2.3.4": a version far more often than a host
                if _VERSION_CONTEXT.search(text, max(0, m.start() - 24), m.start()):
                    continue
                # "Linux 2.6.32.12": a product's version. Only with a one-digit major: server software
                # names also precede addresses ("tomcat 81.2.69.160 (prod)", "PHP 81.2.69.160"; a review's
                # snippets), and the 4-part versions that are valid addresses have small majors
                if len(parts[0]) == 1 and _SOFTWARE_BEFORE.search(text, max(0, m.start() - 24), m.start()) \
                        and not _PORT_AFTER.match(text, m.end()):
                    continue
                if _PRODUCT_SLASH.search(text, max(0, m.start() - 40), m.start()) or (
                        text[m.start() - 1:m.start()] == "/"
                        and _USER_AGENT.search(text, max(0, m.start() - 300), m.start())):
                    continue  # "Chrome/120.0.0.0": a user agent's product version (adversarial testing)
                try:
                    addr = ipaddress.IPv4Address(s)
                except ValueError:
                    continue
                if self.only_public_ips and (not addr.is_global or addr.is_multicast):
                    continue
                out.append((m.start(), m.end(), "ip_address"))
        if v6:
            for m in _IPV6_RE.finditer(text):
                s = m.group()
                if s.count(":") < 2 or not any(c not in ":" for c in s):
                    continue
                try:
                    addr6 = ipaddress.IPv6Address(s)
                except ValueError:
                    continue
                if self.only_public_ips and (addr6 not in _GLOBAL_V6 or not addr6.is_global):
                    continue
                out.append((m.start(), m.end(), "ip_address"))
        return out

    def _phone_meta(self) -> tuple[frozenset[int], tuple[str, ...], str, re.Pattern[str]]:
        """For ``phone_region``: national number lengths, international dialling prefixes,
        the national prefix, and the pattern every valid national number matches."""
        meta = self.__dict__.get("_lazy_phone_meta")
        if meta is None:
            import phonenumbers

            m = phonenumbers.PhoneMetadata.metadata_for_region(self.phone_region)
            possible = frozenset(m.general_desc.possible_length or range(4, 18))
            intl = tuple(p for p in re.split(r"[^0-9]+", m.international_prefix or "") if p) or ("00",)
            pattern = re.compile(m.general_desc.national_number_pattern or r"\d+")
            meta = self.__dict__["_lazy_phone_meta"] = (possible, intl, m.national_prefix or "", pattern)
        return meta

    def _national_ok(self, digits: str) -> bool:
        possible, _, prefix, pattern = self._phone_meta()
        if len(digits) in possible and pattern.fullmatch(digits):
            return True
        if prefix and digits.startswith(prefix):
            rest = digits[len(prefix):]
            return len(rest) in possible and pattern.fullmatch(rest) is not None
        return False

    def _phone_runs(self, piece: str) -> list[tuple[int, int]]:
        """Spans of ``piece`` worth libphonenumber's time (~0.5 ms a parse, several ms for a
        failed match with its inner-match search): the whole piece if it starts with "+" or an
        international dialling prefix; otherwise, from each digit group that starts the piece
        or follows a space or "/", the longest run of groups whose digits form a valid-looking
        national number of ``phone_region`` (its metadata's lengths and pattern). Nearly every
        number in prose fails this for the cost of a few regex matches."""
        groups = list(_DIGITS_RE.finditer(piece))
        total = sum(g.end() - g.start() for g in groups)
        if piece[0] == "+":  # international: the longest prefix that is a number wins
            # ("+81 3-1217-2596 5,869 species": the piece runs on into the next number)
            runs, digits = [], 0
            for g in groups:
                digits += g.end() - g.start()
                if digits > 17:
                    break
                if digits >= 7:
                    runs.append((0, g.end()))
            return runs[::-1]
        values = [g.group() for g in groups]
        if len(values) >= 3 and all(int(b) == int(a) + 1 for a, b in zip(values, values[1:])):
            return []  # "16 17 18 19 20": a page list
        possible, intl, prefix, _ = self._phone_meta()
        lengths = possible | {n + len(prefix) for n in possible}
        if total >= 9 and "".join(values).startswith(intl):
            return [(0, len(piece))]
        runs: list[tuple[int, int]] = []
        for i, first in enumerate(groups):
            if i and not any(c in " \t\u00a0/" for c in piece[groups[i - 1].end():first.start()]):
                continue  # "415-555-0132": only whole numbers start a run, not their inner groups
            self._starts += 1
            if self._start_limit is not None and self._starts > self._start_limit:
                break  # over budget: the caller gives up on the document
            digits, best = "", None
            for j in range(i, len(groups)):
                digits += values[j]
                if len(digits) > 17:
                    break
                if len(digits) in lengths and self._national_ok(digits) and not (
                        j - i >= 2 and all(int(values[k + 1]) == int(values[k]) + 1 for k in range(i, j))):
                    best = groups[j].end()  # (not "88 89 90 91": part of a list)
            if best is not None:
                start = first.start() - 1 if first.start() > 0 and piece[first.start() - 1] == "(" else first.start()
                runs.append((start, best))
        return runs

    def _numbers(self, text: str) -> tuple[list[tuple[int, int, str]] | None, int]:
        """Card and phone spans from one scan for digit runs (None: more libphonenumber checks
        than ``max_phone_candidates``), and the number of such checks."""
        out: list[tuple[int, int, str]] = []
        n = 0
        limit = self.max_phone_candidates
        # cheap run starts examined: a megabyte table of numbers is a data dump, not prose; it
        # gets the same verdict as too many libphonenumber checks, at 1/_START_COST of the price
        self._starts = 0
        self._start_limit = start_limit = None if limit is None else limit * _START_COST
        cards, phones = self.enabled["credit_card"], self.enabled["phone"]
        for m in _NUM_RE.finditer(text):
            if m.end() - m.start() < 7:
                continue  # fewer than 7 characters: fewer than 7 digits
            for ps, pe in _pieces(m.group(), m.start()):
                piece = text[ps:pe]
                digits = sum(map(len, _DIGITS_RE.findall(piece)))
                if digits < 7:
                    continue
                if cards and digits >= 13:
                    found_cards, tried = _cards(piece, start_limit)
                    self._starts += tried
                    if start_limit is not None and self._starts > start_limit:
                        return None, limit + 1
                    out += [(ps + c[0], ps + c[1], "credit_card") for c in found_cards]
                if not phones or _ISBN_RE.search(text, max(0, ps - 12), ps) or _is_isbn10(piece) or _in_doi(text, ps):
                    continue
                done = ps
                runs = self._phone_runs(piece)
                if start_limit is not None and self._starts > start_limit:
                    return None, limit + 1
                for rs, re_ in runs:
                    if ps + rs < done:
                        continue  # inside a number found already
                    n += 1
                    if limit is not None and n > limit:
                        return None, n
                    found = self._phones(text, ps + rs, ps + re_, narrow=piece[0] == "+")
                    out += found
                    done = max([done] + [f[1] for f in found])
        return out, n

    def _phones(self, text: str, ps: int, pe: int, narrow: bool = False) -> list[tuple[int, int, str]]:
        """libphonenumber's matcher (leniency VALID) on the run ``text[ps:pe]`` with a little
        context, so that it rejects numbers glued to letters ("abc8005550199")."""
        import phonenumbers

        out = []
        start, end = max(0, ps - _WINDOW_PAD), min(len(text), pe + _WINDOW_PAD)
        if narrow:
            # "+CC" numbers: context up to the nearest digit, so that the matcher does not glue
            # the number to the next one ("+81 3-1217-2596 5,869 species"); national numbers
            # keep digits around, as the matcher rejects numbers inside longer digit runs
            start, end = ps, pe
            while start > 0 and ps - start < _WINDOW_PAD and not text[start - 1].isdigit():
                start -= 1
            while end < len(text) and end - pe < _WINDOW_PAD and not text[end].isdigit():
                end += 1
        for match in phonenumbers.PhoneNumberMatcher(text[start:end], self.phone_region,
                                                     leniency=phonenumbers.Leniency.VALID):
            raw = match.raw_string
            if _GROUPED_INT_RE.fullmatch(raw) or _DATE_RE.search(raw):
                continue  # "8 045 311 447" people, "24-26.02.2017": valid digits, not phones
            lead = len(raw) - len(raw.lstrip())  # inner matches may keep a leading space
            trail = len(raw) - len(raw.rstrip())
            ms, me = start + match.start + lead, start + match.end - trail
            if not self.phone_bare_digits and raw.strip().isdigit():
                continue  # "Lccn 2013049256", "9192631770 Hz": bare national digit runs are IDs here
            if _in_path(text, ms, me):
                continue  # "/mf/2039.0.55.001/", "10.1136/bmj.325": URL and DOI parts
            out.append((ms, me, "phone"))
        return out

    def redact(self, text: str, flags: set[str] | None = None) -> tuple[str, dict[str, int], int]:
        """The redacted text, replacements per type, and number candidates seen (-1: over budget)."""
        spans, candidates = self.find(text, flags)
        if self.max_phone_candidates is not None and candidates > self.max_phone_candidates:
            return text, {}, -1
        if not spans:
            return text, {}, candidates
        counts: dict[str, int] = {}
        parts = []
        last = 0
        for start, end, kind in spans:
            parts.append(text[last:start])
            parts.append(self.placeholders[kind])
            counts[kind] = counts.get(kind, 0) + 1
            last = end
        parts.append(text[last:])
        return "".join(parts), counts, candidates

    # -- the batch ------------------------------------------------------------------------------
    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        reasons: list[str | None] = [None] * n
        metrics: list[float | None] = [None] * n
        counts = [0] * n
        column = batch.column("text") if "text" in batch.schema.names else pa.nulls(n, pa.string())
        text_type = column.type
        if pa.types.is_null(text_type) or n == 0 or not any(self.enabled.values()):
            return self._out(batch, reasons, metrics, counts, column)
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            raise TypeError(f"stage {self.name}: column 'text' has type {text_type}; expected string")
        flagged: dict[int, set[str]] = {}
        for key, pattern in _PRE_RE2.items():
            if self._wants(key):
                for i in _matching_rows(column, pattern):
                    flagged.setdefault(i, set()).add(key)
        changed_rows: list[int] = []
        changed_texts: list[str] = []
        docs_redacted = 0
        for i in sorted(flagged):
            text = _decode(column[i])
            new, found, candidates = self.redact(text, flagged[i])
            if candidates < 0:
                reasons[i], metrics[i] = "pii_scan_limit", float(self.max_phone_candidates or 0) + 1
                continue
            total = sum(found.values())
            counts[i] = total
            if not total:
                continue
            docs_redacted += 1
            for kind, k in found.items():
                self._pii_counts[kind] += k
            changed_rows.append(i)
            changed_texts.append(new)
            if self.max_replacements is not None and total > self.max_replacements:
                reasons[i], metrics[i] = "too_much_pii", float(total)
        self._pii_counts["docs_redacted"] += docs_redacted
        if changed_rows:
            mask = [False] * n
            for i in changed_rows:
                mask[i] = True
            column = pc.replace_with_mask(column, pa.array(mask), pa.array(changed_texts, type=text_type))
        return self._out(batch, reasons, metrics, counts, column)

    def _out(self, batch, reasons, metrics, counts, column) -> pa.RecordBatch:  # noqa: ANN001
        extra: dict[str, Any] = {COUNT_COLUMN: pa.array(counts, type=pa.int32())}
        if "text" in batch.schema.names:
            extra["text"] = column
        return with_decision(batch, reasons, metrics, extra=extra)


def _matching_rows(column: pa.Array | pa.ChunkedArray, pattern: str) -> list[int]:
    """Rows whose text may hold PII, by one vectorized RE2 test (bytes that are not valid UTF-8
    are tested as binary rather than raising)."""
    try:
        hits = pc.match_substring_regex(column, pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        view = pa.binary() if pa.types.is_string(column.type) else pa.large_binary()
        hits = pc.match_substring_regex(column.view(view), pattern)
    return pc.indices_nonzero(pc.fill_null(hits, False)).to_pylist()


def _decode(scalar: pa.Scalar) -> str:
    """A text cell as ``str``; invalid UTF-8 (Parquet written elsewhere) becomes U+FFFD."""
    try:
        return scalar.as_py()
    except (UnicodeDecodeError, pa.ArrowInvalid):
        return scalar.cast(pa.binary()).as_py().decode("utf-8", "replace")


def _emails(text: str) -> list[tuple[int, int, str]]:
    out = []
    at = text.find("@")
    while at != -1:
        left = _LOCAL_RE.search(text, max(0, at - 64), at)
        right = _DOMAIN_RE.match(text, at + 1, min(len(text), at + 256)) if left else None
        if left and right and right.group(1).lower() not in _NOT_TLDS:
            start = left.start()
            cjk = [m.end() for m in _CJK_CHAR.finditer(text, start, at)]
            if cjk and cjk[-1] < at:  # CJK prose glued to a local part that is not all CJK
                start = cjk[-1]
            scp = text[start:at].lower() == "git" and text[right.end():right.end() + 1] == ":" and \
                text[right.end() + 1:right.end() + 2] not in ("", " ", "\n", "\t")
            if not (start > 0 and text[start - 1] in "@.") and not scp:
                # (``git@github.com:org/repo.git``: git's SSH address of a hosting service, no mail)
                out.append((start, right.end(), "email"))
                at = text.find("@", right.end())
                continue
        at = text.find("@", at + 1)
    return out


def _cards(text: str, limit: int | None = None) -> tuple[list[tuple[int, int, str]], int]:
    """Card spans in ``text`` and the number of candidates tried (at most ``limit`` + 1)."""
    out = []
    tried = 0
    for m in _CARD_RE.finditer(text):
        tried += 1
        if limit is not None and tried > limit:
            break
        s = m.group()
        seps = {c for c in s if not c.isdigit()}
        if len(seps) > 1:
            continue
        digits = s.replace(" ", "").replace("-", "")
        if seps and not _grouped(s, seps.pop()):
            continue
        if card_issuer_ok(digits) and luhn_ok(digits):
            out.append((m.start(), m.end(), "credit_card"))
    return out, tried


def _grouped(s: str, sep: str) -> bool:
    """Card-like grouping: 4-4-4-4(-3), 4-6-5 (Amex) or 4-6-4 (Diners)."""
    sizes = [len(g) for g in s.split(sep)]
    return (sizes[:-1] == [4] * (len(sizes) - 1) and 1 <= sizes[-1] <= 4) or sizes in ([4, 6, 5], [4, 6, 4])


def _resolve(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Drop spans overlapping a higher-priority one (then an earlier one); result in text order."""
    if len(spans) <= 1:
        return spans
    spans.sort(key=lambda s: (_PRIORITY[s[2]], s[0]))
    starts: list[int] = []
    kept: list[tuple[int, int, str]] = []
    for span in spans:
        i = bisect.bisect_right(starts, span[0])
        if i > 0 and kept[i - 1][1] > span[0]:
            continue
        if i < len(kept) and kept[i][0] < span[1]:
            continue
        starts.insert(i, span[0])
        kept.insert(i, span)
    return kept

"""PII redaction: precision/recall per type, false positives on clean text, throughput.

    python benchmarks/pii.py [--docs 20000] [--seed 0]

Data (all real text, read-only from ../shared/data):

- **labelled set**: Wikipedia lead sections (``quality/summaries_en-us.json``; edited, nearly
  PII-free prose with plenty of numbers: dates, years, populations) cut into ~2 KB documents,
  with PII injected at sentence boundaries, in realistic phrasing, and its spans recorded:
  e-mail addresses, public IPv4/IPv6 addresses, phone numbers in US national and international
  formats plus foreign numbers (international ``+CC`` and national formats, the latter not
  expected to be found with the default ``phone_region: US``), Luhn-valid card numbers.
  A prediction is a true positive when it covers an injected span of its type; every other
  prediction (in the injected text or the Wikipedia text around it) is a false positive.
- **clean sets**: (a) the Wikipedia leads as they are; (b) "hard negatives": real Wikipedia
  sentences with injected numbers that are *not* PII (version strings incl. dotted quads,
  dates, times, math, ISBNs, prices, year ranges, coordinates, large counts, zip codes).
  Reported: detections per 1,000 documents, with examples.
- **real web text**: the 697 Common Crawl documents in ``cc_docs``; what is found there is
  printed for a human look (real web pages do contain real contact data).

Throughput: one process (one core), ``PiiRedactor.process`` on Arrow batches of 500 ~2 KB
documents: (1) real web text (Common Crawl documents cut into ~2 KB pieces), (2) the labelled
set (every document has PII: the worst case). Prints docs/s, per CPU-second, and peak RSS.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

FIRST = ["james", "maria", "wei", "fatima", "olga", "john", "aisha", "carlos", "yuki", "priya", "liam", "emma"]
LAST = ["smith", "garcia", "zhang", "khan", "ivanova", "brown", "okafor", "silva", "tanaka", "patel", "murphy", "muller"]
DOMAINS = ["gmail.com", "yahoo.co.uk", "outlook.com", "example.org", "mail.uni-heidelberg.de", "company.io",
           "stanford.edu", "web.de", "orange.fr", "bigpond.net.au", "proton.me", "city-council.gov"]
EMAIL_CONTEXT = ["For details, e-mail {}.", "Contact: {}", "Send your questions to {} before Friday.",
                 "You can reach the author at <{}>.", "Questions? Write to {} or visit our office.", "({})"]
IP_CONTEXT = ["The request came from {}.", "Server IP: {}", "Connect to {}:8080 to see it.",
              "Logged in from {} at 10:42.", "host={} status=200", "The attacker used {} repeatedly."]
PHONE_CONTEXT = ["Call {} for bookings.", "Phone: {}", "Tel. {} (office hours only)",
                 "For more information call us on {}.", "Contact the clinic at {} or by mail.", "Fax {}"]
CARD_CONTEXT = ["Card number: {}", "I paid with {} and it was charged twice.", "cc {} exp 04/27",
                "Please do not share numbers like {} online."]
HARD_NEGATIVES = [
    # (what, template with {} or a literal)
    ("version", "The update to version 1.2.3.4 fixed the crash."),
    ("version", "Tested with Chrome 96.0.4664.110 on Windows 10.0.19041.1288."),
    ("version", "Firmware v2.1.0.12 and build 5.0.2195.6717 are affected."),
    ("version", "See section 12.4.22.1 of the standard."),
    ("version", "The kernel 4.19.0.21 release notes list it."),
    ("date", "The treaty was signed on 2019-07-17 in Geneva."),
    ("date", "Deadline: 07/17/2019, 11:59 PM."),
    ("date", "Published 17.07.2019, updated 18.07.2019 12:30:45."),
    ("date", "It ran from 01/02/2003 to 04/05/2006."),
    ("time", "The race started at 10:30:45 and ended at 12:01:07."),
    ("math", "We get 3 + 4 = 7 and 12 * 34 = 408."),
    ("math", "Thus x = 2.5 * 10^6 and 1/2 + 1/3 = 5/6."),
    ("math", "The product 123456 x 789 equals 97406784."),
    ("math", "pi is about 3.14159265358979 and e about 2.718281828."),
    ("isbn", "ISBN 978-3-16-148410-0 (hardcover), ISBN 0-306-40615-2."),
    ("isbn", "ISBN-13: 9780306406157"),
    ("price", "It costs $1,299.99, or EUR 2 499,00 in Germany."),
    ("price", "Revenue grew to USD 1,234,567,890 in 2021."),
    ("price", "Prices: 19.99 - 24.99 - 29.99 - 34.99."),
    ("years", "He lived 1914-1918 in Paris and 1920-1939 in Rome."),
    ("years", "Seasons 1990–2010, 2011–2020."),
    ("years", "(1889 – 1945)"),
    ("coordinates", "Located at 48.8566, 2.3522 (48 51 24 N 2 21 03 E)."),
    ("counts", "The population was 7 800 000 000 in 2020 and 8 045 311 447 in 2023."),
    ("counts", "It has 1,234,567 inhabitants and 3 456 789 visitors."),
    ("zip", "Mail to 1600 Amphitheatre Parkway, Mountain View, CA 94043-1351."),
    ("ids", "DOI 10.1000/182 and arXiv:2306.01116 and PMID 12345678."),
    ("ids", "Item 5012345678900 (EAN) and order 2021-0042-17."),
    ("scores", "Final score: 102-98, 3-1, 25-23 (sets 25-23 25-21 23-25 25-19)."),
    ("ip_private", "Set the router to 192.168.1.1 with netmask 255.255.255.0 and DNS 127.0.0.1."),
    ("code", "Use std::vector<int> and Foo::Bar::baz() here; a::b::c."),
    ("ids", "MAC 00:1A:2B:3C:4D:5E, UUID 123e4567-e89b-12d3-a456-426614174000, md5 5d41402abc4b2a76b9719d911017c592."),
    ("ids", "Unix time 1563372000 (2019), patent US 7,654,321 B2, tracking 1Z999AA10123456784."),
    ("ratios", "John 3:16, aspect 16:9, odds 5:2, at 12:30 and 23:59:59."),
]


def _wiki_texts() -> list[str]:
    data = json.loads((DATA / "quality" / "summaries_en-us.json").read_text(encoding="utf-8"))
    return [v["extract"] for v in data.values() if isinstance(v, dict) and v.get("extract")]


def _cc_texts() -> list[str]:
    out = []
    for path in sorted((DATA / "cc_docs").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out.extend(json.loads(line)["text"] for line in f)
    return out


def _chunks(texts: list[str], size: int = 2000) -> list[str]:
    """~``size``-character documents: long texts cut at a paragraph/sentence, short ones joined."""
    out, buf = [], ""
    for t in texts:
        while t:
            room = size - len(buf)
            if len(t) <= room:
                buf += t + "\n\n"
                t = ""
            else:
                cut = t.rfind(". ", 0, room)
                cut = room if cut < room // 2 else cut + 1
                buf += t[:cut]
                t = t[cut:].lstrip()
            if len(buf) >= size * 0.9:
                out.append(buf.strip())
                buf = ""
    return out


# -- PII generators ----------------------------------------------------------------------------
def _email(rng: random.Random) -> str:
    f, l, d = rng.choice(FIRST), rng.choice(LAST), rng.choice(DOMAINS)
    style = rng.randrange(5)
    local = [f"{f}.{l}", f"{f[0]}{l}{rng.randrange(10, 99)}", f"{f}_{l}", f"{f}+news", f"{l}.{f[0]}"][style]
    return local + "@" + d if rng.random() < 0.8 else (local + "@" + d).capitalize()


def _ipv4(rng: random.Random) -> str:
    import ipaddress

    while True:
        a = ipaddress.IPv4Address(rng.getrandbits(32))
        if a.is_global and not a.is_multicast and max(a.packed) >= 10:
            return str(a)


def _ipv6(rng: random.Random) -> str:
    import ipaddress

    while True:
        a = ipaddress.IPv6Address((0x2000 + rng.randrange(0x2000)) << 112 | rng.getrandbits(64))
        if a.is_global:
            return a.compressed if rng.random() < 0.7 else a.exploded


PHONE_REGIONS = {"US": 1, "GB": 44, "DE": 49, "FR": 33, "IN": 91, "JP": 81, "AU": 61, "BR": 55}


def _phone(rng: random.Random) -> tuple[str, str]:
    """A valid number and its format group."""
    import phonenumbers as pn

    region = "US" if rng.random() < 0.5 else rng.choice([r for r in PHONE_REGIONS if r != "US"])
    ex = pn.example_number_for_type(region, pn.PhoneNumberType.MOBILE if rng.random() < 0.5 else pn.PhoneNumberType.FIXED_LINE)
    digits = str(ex.national_number)
    while True:  # same leading digits as the example (a real prefix), random rest, must validate
        nn = digits[:3] + "".join(str(rng.randrange(10)) for _ in digits[3:])
        num = pn.parse(f"+{PHONE_REGIONS[region]}{nn}")
        if pn.is_valid_number(num):
            break
    if region == "US":
        style = rng.randrange(8)
        d = nn
        text = [pn.format_number(num, pn.PhoneNumberFormat.NATIONAL), f"{d[:3]}-{d[3:6]}-{d[6:]}",
                f"{d[:3]}.{d[3:6]}.{d[6:]}", f"{d[:3]} {d[3:6]} {d[6:]}",
                pn.format_number(num, pn.PhoneNumberFormat.INTERNATIONAL), f"+1-{d[:3]}-{d[3:6]}-{d[6:]}",
                pn.format_number(num, pn.PhoneNumberFormat.E164), d][style]
        return text, "us_national" if style < 4 else "us_international" if style < 7 else "us_bare_digits"
    if rng.random() < 0.7:
        fmt = pn.PhoneNumberFormat.INTERNATIONAL if rng.random() < 0.8 else pn.PhoneNumberFormat.E164
        return pn.format_number(num, fmt), "foreign_international"
    return pn.format_number(num, pn.PhoneNumberFormat.NATIONAL), "foreign_national"


def _card(rng: random.Random) -> str:
    from refinery.stages.pii import luhn_ok

    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                                 ("6011", 16), ("65", 16), ("3530", 16)])
    while True:
        body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix)))
        if luhn_ok(body):
            break
    sep = rng.choice(["", " ", "-"])
    if not sep:
        return body
    groups = [body[:4], body[4:10], body[10:]] if length == 15 else [body[i:i + 4] for i in range(0, length, 4)]
    return sep.join(groups)


def labelled_docs(wiki: list[str], n: int, rng: random.Random) -> list[tuple[str, list[tuple[int, int, str, str]]]]:
    """Documents with injected PII and its spans ``(start, end, type, format group)``."""
    base = _chunks(wiki)
    out = []
    for i in range(n):
        text = base[i % len(base)]
        sentences = re.split(r"(?<=\.) ", text)
        inserts = []
        for _ in range(rng.randint(1, 4)):
            kind = rng.choice(["email", "ip_address", "ip_address", "phone", "phone", "phone", "credit_card"])
            group = kind
            if kind == "email":
                value, tpl = _email(rng), rng.choice(EMAIL_CONTEXT)
            elif kind == "ip_address":
                v6 = rng.random() < 0.35
                value, tpl = (_ipv6(rng) if v6 else _ipv4(rng)), rng.choice(IP_CONTEXT)
                if v6 and ":8080" in tpl:
                    tpl = "Connect to [{}]:8080 to see it."  # IPv6 with a port: in brackets (RFC 3986)
                group = "ipv6" if v6 else "ipv4"
            elif kind == "phone":
                (value, group), tpl = _phone(rng), rng.choice(PHONE_CONTEXT)
            else:
                value, tpl = _card(rng), rng.choice(CARD_CONTEXT)
            inserts.append((rng.randrange(len(sentences) + 1), tpl, value, kind, group))
        inserts.sort(key=lambda x: x[0])
        parts, spans, pos, k = [], [], 0, 0
        for j in range(len(sentences) + 1):
            while k < len(inserts) and inserts[k][0] == j:
                _, tpl, value, kind, group = inserts[k]
                pre, post = tpl.split("{}")
                start = pos + len(pre)
                spans.append((start, start + len(value), kind, group))
                piece = pre + value + post + " "
                parts.append(piece)
                pos += len(piece)
                k += 1
            if j < len(sentences):
                piece = sentences[j] + " "
                parts.append(piece)
                pos += len(piece)
        out.append(("".join(parts), spans))
    return out


def evaluate(stage, docs) -> dict:  # noqa: ANN001
    from refinery.stages.pii import TYPES

    tp = {t: 0 for t in TYPES}
    fp = {t: 0 for t in TYPES}
    by_group: dict[str, list[int]] = {}
    examples_fp: list[str] = []
    examples_fn: list[str] = []
    for text, gold in docs:
        pred, _ = stage.find(text)
        used = set()
        for gs, ge, kind, group in gold:
            hit = next((j for j, (ps, pe, pk) in enumerate(pred)
                        if pk == kind and ps <= gs + 1 and pe >= ge - 1 and j not in used), None)
            g = by_group.setdefault(group, [0, 0])
            g[1] += 1
            if hit is not None:
                used.add(hit)
                tp[kind] += 1
                g[0] += 1
            elif len(examples_fn) < 12 and group not in ("foreign_national", "us_bare_digits"):
                examples_fn.append(f"{kind}: {text[max(0, gs - 20):ge + 20]!r}")
        for j, (ps, pe, pk) in enumerate(pred):
            if j not in used:
                fp[pk] += 1
                if len(examples_fp) < 12:
                    examples_fp.append(f"{pk}: {text[max(0, ps - 25):pe + 10]!r}")
    gold_n = {t: sum(1 for _, g in docs for x in g if x[2] == t) for t in TYPES}
    return {"tp": tp, "fp": fp, "gold": gold_n, "groups": by_group, "fp_examples": examples_fp, "fn_examples": examples_fn}


def detections(stage, texts: list[str]) -> tuple[dict[str, int], list[str]]:  # noqa: ANN001
    counts: dict[str, int] = {}
    examples = []
    for text in texts:
        for s, e, kind in stage.find(text)[0]:
            counts[kind] = counts.get(kind, 0) + 1
            if len(examples) < 15:
                examples.append(f"{kind}: {text[max(0, s - 30):e + 10]!r}")
    return counts, examples


def throughput(stage, texts: list[str], batch_size: int = 500) -> tuple[float, float]:  # noqa: ANN001
    import pyarrow as pa

    batches = [pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts[j:j + batch_size]))],
                                           "text": texts[j:j + batch_size]})
               for j in range(0, len(texts), batch_size)]
    stage(batches[0])  # warm-up: phonenumbers metadata loads lazily
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for b in batches:
        stage(b)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return len(texts) / wall, len(texts) / max(cpu, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000, help="documents in the labelled and throughput sets")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from refinery.stages.pii import TYPES, PiiRedactor

    rng = random.Random(args.seed)
    stage = PiiRedactor()
    wiki = _wiki_texts()
    cc = _cc_texts()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          "(shared with other engineers' work: figures are lower bounds); one process")
    print(f"PiiRedactor defaults: region {stage.phone_region}, only_public_ips {stage.only_public_ips}, "
          f"types {[t for t in TYPES if stage.enabled[t]]}\n")

    labelled = labelled_docs(wiki, args.docs // 4, rng)
    ev = evaluate(stage, labelled)
    print(f"labelled set: {len(labelled)} docs (~2 KB Wikipedia text + injected PII)")
    print(f"{'type':<12} {'gold':>6} {'TP':>6} {'FP':>5} {'precision':>9} {'recall':>7}")
    for t in TYPES:
        tp, fp, gold = ev["tp"][t], ev["fp"][t], ev["gold"][t]
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / gold if gold else float("nan")
        print(f"{t:<12} {gold:>6} {tp:>6} {fp:>5} {p:>9.4f} {r:>7.4f}")
    print("recall by format group:")
    for g, (hit, total) in sorted(ev["groups"].items()):
        print(f"  {g:<22} {hit:>5}/{total:<5} {hit / total:.4f}")
    print("false-positive examples:", *ev["fp_examples"] or ["(none)"], sep="\n  ")
    print("missed (excluding foreign_national, us_bare_digits):", *ev["fn_examples"] or ["(none)"], sep="\n  ")

    counts, examples = detections(stage, wiki)
    total = sum(counts.values())
    print(f"\nclean Wikipedia leads: {len(wiki)} docs: {total} detections = {1000 * total / len(wiki):.2f} per 1k docs {counts}")
    print(*examples, sep="\n  ") if examples else None
    hard = []
    for i in range(args.docs // 4):
        what, neg = HARD_NEGATIVES[i % len(HARD_NEGATIVES)]
        sentences = re.split(r"(?<=\.) ", wiki[i % len(wiki)])
        at = rng.randrange(len(sentences) + 1)
        hard.append(" ".join(sentences[:at] + [neg] + sentences[at:]))
    counts_h, examples_h = detections(stage, hard)
    total_h = sum(counts_h.values())
    print(f"hard negatives ({len(HARD_NEGATIVES)} kinds of non-PII numbers in real sentences): {len(hard)} docs: "
          f"{total_h} detections = {1000 * total_h / len(hard):.2f} per 1k docs {counts_h}")
    print(*examples_h, sep="\n  ") if examples_h else None
    counts_cc, examples_cc = detections(stage, cc)
    print(f"\nreal Common Crawl documents ({len(cc)}): found {counts_cc} (real contact data expected; a look):")
    print(*examples_cc, sep="\n  ")

    # the same documents through libphonenumber's matcher alone (whole text, leniency VALID):
    # what our pre-checks and filters drop from it, for a human look
    import phonenumbers as pn

    ref_n = ours_n = 0
    dropped, added = [], []
    for text in cc:
        ref = {(m.start, m.end) for m in pn.PhoneNumberMatcher(text, stage.phone_region, leniency=pn.Leniency.VALID)}
        ours = {(s, e) for s, e, k in stage.find(text)[0] if k == "phone"}
        ref_n, ours_n = ref_n + len(ref), ours_n + len(ours)
        dropped += [text[max(0, s - 20):e + 5] for s, e in sorted(ref - ours)]
        added += [text[max(0, s - 20):e + 5] for s, e in sorted(ours - ref)]
    print(f"phones in the same documents: PhoneNumberMatcher alone {ref_n}, this stage {ours_n}; "
          f"only the matcher: {len(dropped)}, only this stage: {len(added)}")
    print(*[repr(x) for x in dropped[:: max(1, len(dropped) // 12)]], sep="\n  ")

    web = _chunks(cc)
    web = (web * (args.docs // len(web) + 1))[: args.docs]
    mean_kb = sum(len(t.encode()) for t in web) / len(web) / 1024
    fresh = PiiRedactor()
    wall_rate, cpu_rate = throughput(fresh, web)
    print(f"\nthroughput, real web text ({len(web)} docs, mean {mean_kb:.2f} KB): {wall_rate:,.0f} docs/s/core "
          f"(wall), {cpu_rate:,.0f} docs per CPU-second")
    pii_texts = [t for t, _ in labelled]
    wall_rate2, cpu_rate2 = throughput(PiiRedactor(), pii_texts)
    mean_kb2 = sum(len(t.encode()) for t in pii_texts) / len(pii_texts) / 1024
    print(f"throughput, labelled set (every doc has PII; {len(pii_texts)} docs, mean {mean_kb2:.2f} KB): "
          f"{wall_rate2:,.0f} docs/s/core (wall), {cpu_rate2:,.0f} docs per CPU-second")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(includes the data sets held in memory); load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

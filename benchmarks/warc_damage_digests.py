"""Digests of what the WARC reader makes of damaged WARCs: a differential check for changes to
``refinery/io/warc.py`` that must not change behaviour (rows, batches, counters).

    PYTHONPATH=/path/to/checkout_a python benchmarks/warc_damage_digests.py > a.txt
    PYTHONPATH=/path/to/checkout_b python benchmarks/warc_damage_digests.py > b.txt
    diff a.txt b.txt          # no output: the two readers agree on every case

Generates (seeded, deterministic; ``--seed``) ~370 damaged WARCs from the records of
``data/sample/warc``: whole-file gzip (one or a few members) with garbage, overwritten bytes,
flipped bits, wrong ``Content-Length``, records cut short, a cut-off file, a deflate stream cut or
broken at a flush point after garbage, records over the 16 MiB inflated window; one gzip member per
record (Common Crawl) with damaged WARC bytes and/or damaged, cut or inserted members; plain WARCs
with the same damages, several per file; empty, non-WARC and padded files. Each is read as a
seekable stream, a non-seekable one, both giving short reads, some through pyarrow's decompressing
stream, some through a stream that fails (OSError) part-way, at a random batch size. One line per
(case, stream kind): a digest of every row, each batch's length, the exception raised if any, and
the reader's counters (``corrupt_offsets``, ``resync_offsets``, ``responses``, ``records``,
``skipped_records``). ~10 s CPU.
"""
import argparse, gzip, hashlib, io, random, re, sys, zlib
from pathlib import Path

import pyarrow as pa
from fastwarc.warc import ArchiveIterator
from refinery.io.warc import WarcReader

W = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc"
recs = []
for p in sorted(W.glob("*.warc.gz")):
    if "clipped" in p.name:
        continue
    plain = gzip.decompress(p.read_bytes())
    with io.BytesIO(plain) as f:
        starts = sorted(r.stream_pos for r in ArchiveIterator(f, parse_http=False)) + [len(plain)]
    recs += [plain[a:b] for a, b in zip(starts, starts[1:])]
def gz(data: bytes, compresslevel: int = 9) -> bytes:
    # mtime=0: the header's time changes the bytes a cut member is inflated into (its next member's
    # header), so a case read twice a second apart was not the same input
    return gzip.compress(data, compresslevel=compresslevel, mtime=0)


JUNK = b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: zz\r\n\r\n" + b"\x00garbage\xff" * 100 + b"\r\n"


class NoSeek(io.RawIOBase):
    def __init__(s, b):
        s.b = io.BytesIO(b)
    def readable(s): return True
    def seekable(s): return False
    def read(s, n=-1): return s.b.read(n)


class Short(io.RawIOBase):
    """Reads return 1..min(n, 4099) bytes, a seeded random count; seekable or not."""
    def __init__(s, b, seekable, seed):
        s.b, s._seekable, s.rng = io.BytesIO(b), seekable, random.Random(seed)
    def readable(s): return True
    def seekable(s): return s._seekable
    def tell(s):
        if not s._seekable: raise OSError("not seekable")
        return s.b.tell()
    def seek(s, off, whence=0):
        if not s._seekable: raise OSError("not seekable")
        return s.b.seek(off, whence)
    def read(s, n=-1):
        if n is None or n < 0:
            return s.b.read()
        return s.b.read(max(1, min(n, s.rng.randrange(1, 4100))) if n else 0)


class Failing(NoSeek):
    """A network stream that breaks (OSError, not bad bytes) after a seeded number of bytes."""
    def __init__(s, b, seed):
        super().__init__(b)
        s.left = random.Random(seed).randrange(0, len(b) + 1)
    def read(s, n=-1):
        if s.left <= 0:
            raise OSError("connection reset by peer")
        data = s.b.read(min(n, s.left) if n is not None and n >= 0 else s.left)
        s.left -= len(data)
        return data


def stream(kind, data, seed):
    if kind == "seek": return io.BytesIO(data)
    if kind == "noseek": return NoSeek(data)
    if kind == "short": return Short(data, False, seed)
    if kind == "shortseek": return Short(data, True, seed)
    if kind == "pa_gzip": return pa.CompressedInputStream(pa.BufferReader(data), "gzip")
    if kind == "ioerror": return Failing(data, seed)
    raise ValueError(kind)


def digest(data, kind, batch_size, seed):
    r = WarcReader(batch_size=batch_size)
    h = hashlib.sha256()
    sizes = []
    try:
        for b in r.read(stream(kind, data, seed), "x"):
            sizes.append(b.num_rows)
            for row in b.to_pylist():
                h.update(repr(sorted(row.items())).encode())
        err = None
    except BaseException as exc:  # noqa: BLE001 - an exception is an outcome to compare too
        err = type(exc).__name__
    h.update(repr((sizes, err, r.corrupt_offset, r.corrupt_offsets, r.resync_offsets, r.responses,
                   r.records, sorted(r.skipped_records.items()))).encode())
    return f"{h.hexdigest()[:16]} rows={sum(sizes)} spans={len(r.corrupt_offsets)} err={err}"


# ---- whole-file gzip, one damage kind per file (the first generator of this check)
def h41_cases(rng, n):
    for case in range(n):
        sel = recs[:]
        rng.shuffle(sel)
        sel = sel[: rng.randrange(5, len(sel))]
        kind = rng.choice(["junk", "junks", "overwrite", "cut", "members", "flip"])
        body = [*sel]
        for _ in range(1 if kind in ("junk", "cut", "members") else rng.randrange(2, 5)):
            i = rng.randrange(len(body) + 1)
            if kind == "overwrite":
                j = rng.randrange(len(body)); body[j] = overwrite(rng, body[j])
            elif kind == "flip":
                j = rng.randrange(len(body)); r = bytearray(body[j]); p = rng.randrange(len(r)); r[p] ^= 0x20; body[j] = bytes(r)
            else:
                body.insert(i, JUNK)
        plain = b"".join(body)
        if kind == "members":
            k = rng.randrange(1, len(body))
            data = gz(b"".join(body[:k])) + gz(b"".join(body[k:]))
        else:
            data = gz(plain, compresslevel=rng.choice([0, 1, 6]))
        if kind == "cut":
            data = data[: rng.randrange(len(data) // 2, len(data))]
        yield f"wholegz-{kind}", data


# ---- damages on the WARC bytes of a record list
def wrong_length(rng, rec):
    m = re.search(rb"Content-Length: *(\d+)", rec)
    if not m:
        return rec
    n = int(m.group(1))
    new = rng.choice([str(n + rng.randrange(1, 300)), str(max(0, n - rng.randrange(1, 300))), "-5", "zz",
                      str(n * 1000 + 7), ""]).encode()
    return rec[: m.start(1)] + new + rec[m.end(1):]


def overwrite(rng, data):
    r = bytearray(data); p = rng.randrange(len(r)); r[p:p + 50] = b"\x00\xffjunk" * 7
    return bytes(r)


def flip_bit(rng, data):
    r = bytearray(data); p = rng.randrange(len(r)); r[p] ^= 1 << rng.randrange(8)
    return bytes(r)


def maybe_cut(rng, data, kinds, share, shortest):
    """``data`` cut off (at ``len(data) // shortest`` or later) in ``share`` of the cases."""
    if rng.random() < share:
        data = data[: rng.randrange(len(data) // shortest, len(data))]
        kinds.append("cut")
    return data


def damage_records(rng, body, ndamage):
    kinds = []
    for _ in range(ndamage):
        d = rng.choice(["junk", "garbage", "overwrite", "flip", "length", "drop_tail", "blank"])
        kinds.append(d)
        if d == "junk":
            body.insert(rng.randrange(len(body) + 1), JUNK)
        elif d == "garbage":
            body.insert(rng.randrange(len(body) + 1), rng.randbytes(rng.randrange(1, 3000)))
        elif d == "overwrite":
            j = rng.randrange(len(body)); body[j] = overwrite(rng, body[j])
        elif d == "flip":
            j = rng.randrange(len(body)); body[j] = flip_bit(rng, body[j])
        elif d == "length":
            j = rng.randrange(len(body)); body[j] = wrong_length(rng, body[j])
        elif d == "drop_tail":  # a record cut short in the middle of the file
            j = rng.randrange(len(body)); body[j] = body[j][: rng.randrange(1, len(body[j]))]
        elif d == "blank":
            body.insert(rng.randrange(len(body) + 1), b"\r\n" * rng.randrange(1, 5))
    return kinds


def pick(rng):
    sel = recs[:]
    rng.shuffle(sel)
    return sel[: rng.randrange(3, min(len(sel), 40))]


def plain_cases(rng, n):
    for _ in range(n):
        body = pick(rng)
        kinds = damage_records(rng, body, rng.choice([1, 1, 2, 3, 5]))
        data = maybe_cut(rng, b"".join(body), kinds, 0.3, 3)
        yield "plain-" + "+".join(kinds), data


def per_record_cases(rng, n):
    """One gzip member per record (Common Crawl); damage in the WARC bytes and/or compressed bytes."""
    for _ in range(n):
        body = pick(rng)
        kinds = damage_records(rng, body, rng.choice([0, 1, 2])) if rng.random() < 0.6 else []
        members = [gz(r, compresslevel=rng.choice([1, 6])) for r in body]
        for _ in range(rng.choice([0, 1, 1, 2, 3]) if kinds else rng.choice([1, 2, 3])):
            d = rng.choice(["zflip", "zgarbage", "ztrunc_member", "zjunk_member", "zoverwrite"])
            kinds.append(d)
            j = rng.randrange(len(members))
            if d == "zflip":
                members[j] = flip_bit(rng, members[j])
            elif d == "zgarbage":
                members.insert(j, rng.randbytes(rng.randrange(1, 2000)))
            elif d == "ztrunc_member":
                members[j] = members[j][: rng.randrange(1, len(members[j]))]
            elif d == "zjunk_member":
                members.insert(j, gz(JUNK))
            elif d == "zoverwrite":
                m = bytearray(members[j]); p = rng.randrange(len(m)); m[p:p + 40] = rng.randbytes(40); members[j] = bytes(m)
        data = maybe_cut(rng, b"".join(members), kinds, 0.25, 3)
        yield "pergz-" + "+".join(kinds), data


def whole_cases(rng, n):
    """Whole-file gzip (one or a few members) with several damages of the WARC bytes."""
    for _ in range(n):
        body = pick(rng)
        kinds = damage_records(rng, body, rng.choice([1, 2, 3, 4]))
        nmem = rng.choice([1, 1, 2, 3])
        cuts = sorted(rng.sample(range(1, len(body)), min(nmem - 1, len(body) - 1)))
        parts = [b"".join(body[a:b]) for a, b in zip([0, *cuts], [*cuts, len(body)])]
        data = maybe_cut(rng, b"".join(gz(p, compresslevel=rng.choice([0, 1, 6])) for p in parts), kinds, 0.3, 2)
        if rng.random() < 0.15:  # a flipped bit in the compressed bytes: the deflate stream breaks
            m = bytearray(data); p = rng.randrange(len(m) // 2, len(m)); m[p] ^= 0x10; data = bytes(m)
            kinds.append("zflip")
        yield f"wholegz{nmem}-" + "+".join(kinds), data


def big_cases(rng):
    """A whole-file gzip member whose resync goes back behind the 16 MiB inflated window."""
    big_body = b"<html><body>" + b"x" * (20 * 2**20) + b"</body></html>"
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + big_body
    big = (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:big>\r\n"
           b"Content-Type: application/http; msgtype=response\r\nContent-Length: "
           + str(len(http)).encode() + b"\r\n\r\n" + http + b"\r\n\r\n")
    for wrong in (False, True):
        body = pick(rng)[:5]
        rec = wrong_length(rng, big) if wrong else big
        body[2:2] = [rec, JUNK]
        yield f"big-{'length' if wrong else 'junk'}", gz(b"".join(body), compresslevel=1)


def syncflush_cases(rng, n):
    """Whole-file gzip with garbage early and its deflate stream cut off (or broken) at a flush
    point right after a record: reading inside the member ends cleanly, then the break is counted."""
    for _ in range(n):
        body = pick(rng)
        if len(body) < 6:
            body = (body * 3)[:8]
        body.insert(rng.randrange(0, 2), JUNK)
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        data, flush_points = b"", []
        for r in body:
            data += c.compress(r) + c.flush(zlib.Z_SYNC_FLUSH)
            flush_points.append(len(data))
        data += c.flush()
        at = rng.choice(flush_points[len(flush_points) // 2: -1])
        if rng.random() < 0.5:
            yield "syncflush-cut", data[:at]
        else:  # a stored block header with a bad type right at the flush point: deflate breaks there
            yield "syncflush-break", data[:at] + b"\xff" * 40 + data[at + 40:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    seed = parser.parse_args().seed
    out = []
    cases = list(h41_cases(random.Random(seed), 60))
    rng = random.Random(seed + 1)
    cases += list(per_record_cases(rng, 110))
    cases += list(plain_cases(rng, 110))
    cases += list(whole_cases(rng, 60))
    cases += list(syncflush_cases(rng, 20))
    cases += [("empty", b""), ("not-warc", b"hello world\n" * 50), ("gz-garbage", b"\x1f\x8b" + b"\x00" * 100),
              ("blank-padding", gz(recs[0]) + b"\x00" * 600)]
    cases.append(("clipped-file", (W / "resiliparse_clipped.warc.gz").read_bytes()))
    cases += [(f"bundled-{p.name}", p.read_bytes()) for p in sorted(W.glob("*.warc.gz"))]
    big = list(big_cases(rng))
    for i, (name, data) in enumerate(cases):
        bs = rng.choice([1, 3, 7, 50, 500])
        kinds = ["seek", "noseek", "short", "shortseek"]
        if data[:2] == b"\x1f\x8b" and rng.random() < 0.2 or name in ("not-warc", "gz-garbage", "empty"):
            kinds.append("pa_gzip")
        if rng.random() < 0.1 or name.startswith(("empty", "clipped")):
            kinds.append("ioerror")
        for k in kinds:
            out.append(f"{i} {name} len={len(data)} bs={bs} {k} {digest(data, k, bs, i)}")
    for j, (name, data) in enumerate(big):
        for k in ("seek", "noseek"):
            out.append(f"B{j} {name} len={len(data)} bs=50 {k} {digest(data, k, 50, j)}")
    print("\n".join(out))
    print(f"# cases={len(cases) + len(big)} lines={len(out)}", file=sys.stderr)


if __name__ == "__main__":
    main()

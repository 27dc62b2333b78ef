"""Read many small files at once, in order: a bounded thread pool running ahead of the reader.

`refinery report` of a many-shard run read its files one after another (27,826 at 4,000 shards:
each pass's samples, every token shard and kept shard, the stats markers): on S3 each is a request
round trip (~20-100 ms), hours at 90,000 shards (session 43, h130). :func:`read_ahead` keeps up to
``ahead`` reads running or done-but-unconsumed while the caller works through the results in the
items' order, so the output is what the serial loop gave and memory holds ``ahead`` results, not
the run's. It imports nothing of refinery's (the bottom layer).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain, islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: reads in flight at once: S3 answers each in ~20-100 ms, and a GET holds no CPU while it waits
READ_THREADS = 16


def read_ahead(read: Callable[[T], R], items: Iterable[T], threads: int = READ_THREADS,
               ahead: int | None = None) -> Iterator[R]:
    """``read(item)`` for each of ``items``, yielded in the items' order, with up to ``ahead``
    (default twice ``threads``) begun and not yet used, the one in use among them. A read that raises
    raises here, at its place in the order (the results before it were yielded, as a loop would).
    Stopping early (an exception in the caller, a generator closed) cancels the reads not begun."""
    ahead = max(1, ahead if ahead is not None else 2 * threads)
    rest = iter(items)
    first = list(islice(rest, 2))
    if len(first) < 2:  # a single file: no pool to start
        yield from map(read, first)
        return
    stream = chain(first, rest)
    pool = ThreadPoolExecutor(max_workers=min(threads, ahead), thread_name_prefix="refinery-read")
    try:
        queue: deque[Future[R]] = deque(pool.submit(read, item) for item in islice(stream, ahead))
        while queue:
            yield queue.popleft().result()
            for item in islice(stream, 1):  # one in for the one used: ``ahead`` held, the one in use too
                queue.append(pool.submit(read, item))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

"""The rest of an epoch dealt to another shape of ranks (a job restarted mid-epoch on more or fewer
ranks, or with another batch size): which rows of the epoch's plan each new rank yields.

Pure arithmetic on row counts: no permutation and no read. An epoch's plan gives each rank of its
first shape a list of groups (``TokenLoader._groups``); a *piece* ``(rank, group, start, stop)``
names rows ``start:stop`` of that rank's group, in emission order. Every rank of a shape yields
``epoch_rows`` rows (real windows, then padding); a job left at ``position`` has yielded each rank's
first rows, so the rest of the epoch is each rank's unread real rows, concatenated in rank order and
cut into one contiguous slice per new rank, sizes differing by at most one window (as the loose
windows of an epoch are cut). A rest may itself be left and dealt again: each shape left is a
*level*, kept in the loader's state, so the rest is a function of the state alone. Rationale and
figures: docs/tokens.md, *Session 49 (h201)*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Piece = tuple[int, int, int, int]  # (rank of the epoch's first shape, its group, first row, end row)


@dataclass(frozen=True)
class Level:
    """A shape of ranks an epoch was iterated in and the rows each rank had yielded when it was left."""

    world_size: int
    batch_size: int
    drop_last: bool
    position: int


def epoch_rows(sizes: Sequence[int], batch_size: int, drop_last: bool) -> int:
    """Rows every rank yields (DDP lockstep) when the ranks hold ``sizes`` real rows: the busiest
    rank's rounded up to whole batches, or with ``drop_last`` the least busy rank's rounded down."""
    if not sizes:
        return 0
    if drop_last:
        return min(sizes) // batch_size * batch_size
    return -(-max(sizes) // batch_size) * batch_size


def gap_slot(n_real: int, total: int, batch_size: int, drop_last: bool) -> int | None:
    """Row slot of the padding row moved forward on a rank that would otherwise end on an
    all-padding batch (its last batch then holds its last window), else None."""
    if drop_last or batch_size < 2 or n_real < 1:
        return None
    return n_real - 1 if total - n_real == batch_size else None


def without_target(sizes: Sequence[int], total: int, batch_size: int) -> list[int]:
    """Ranks that would get a batch without any target (a NaN loss): a whole batch of padding
    that no moved padding row can avoid (``batch_size`` 1, or a rank with no window at all)."""
    return [r for r, n in enumerate(sizes) if total - n >= batch_size and (batch_size < 2 or n < 1)]


def rows(pieces: Sequence[Piece]) -> int:
    return sum(stop - start for _, _, start, stop in pieces)


def take(pieces: Sequence[Piece], start: int, stop: int) -> list[Piece]:
    """The pieces holding rows ``start:stop`` of ``pieces``' concatenation."""
    out, at = [], 0
    for rank, group, a, b in pieces:
        lo, hi = max(start - at, 0), min(stop - at, b - a)
        if lo < hi:
            out.append((rank, group, a + lo, a + hi))
        at += b - a
    return out


def unread(pieces: Sequence[Piece], total: int, level: Level) -> list[Piece]:
    """A rank's real rows not yet yielded at ``level.position``: its rows after those yielded (the
    moved padding row was not one), up to the ``total`` rows a rank yields (``drop_last`` drops
    the rest; they stay dropped)."""
    n_real = rows(pieces)
    gap = gap_slot(n_real, total, level.batch_size, level.drop_last)
    done = level.position - 1 if gap is not None and level.position > gap else level.position
    return take(pieces, min(done, n_real), min(n_real, total))


def deal(first: Sequence[Sequence[Piece]], levels: Sequence[Level], world_size: int) -> list[list[Piece]]:
    """Each of ``world_size`` new ranks' pieces: ``first`` is every rank's rows in the epoch's first
    shape (``levels[0]``), ``levels`` the shapes the epoch was left in, oldest first. Raises
    ValueError for a position that is not a batch boundary of its level's epoch."""
    ranks = [list(p) for p in first]
    worlds = [lv.world_size for lv in levels[1:]] + [world_size]
    for level, world in zip(levels, worlds):
        total = epoch_rows([rows(p) for p in ranks], level.batch_size, level.drop_last)
        if level.position % level.batch_size or not 0 <= level.position <= total:
            raise ValueError(f"position {level.position} is not a batch boundary of the epoch as dealt to "
                             f"world_size {level.world_size}, batch_size {level.batch_size} ({total} rows per rank)")
        rest = [piece for pieces in ranks for piece in unread(pieces, total, level)]
        ranks = cut(rest, world)
    return ranks


def cut(pieces: Sequence[Piece], world_size: int) -> list[list[Piece]]:
    """``pieces``' rows in ``world_size`` contiguous slices whose sizes differ by at most one row
    (in one pass: a slice each by :func:`take` was 12 s of CPU for 120k groups on 512 ranks)."""
    n = rows(pieces)
    bounds = [j * n // world_size for j in range(world_size + 1)]
    out: list[list[Piece]] = [[] for _ in range(world_size)]
    j, at = 0, 0
    for rank, group, a, b in pieces:
        while a < b:
            while bounds[j + 1] <= at:  # slices of no row (fewer rows than ranks)
                j += 1
            step = min(b - a, bounds[j + 1] - at)
            out[j].append((rank, group, a, a + step))
            a, at = a + step, at + step
    return out

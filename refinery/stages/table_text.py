"""Tables in extracted text: which rows stay table rows and which are page layout.

Extraction keeps tables (issue 13) and writes each row as ``| cell | cell |`` under a header
rule ``|---|---|`` (trafilatura's text format; ``|`` inside a cell is escaped as ``\\|``). Many
pages, older ones above all, use ``<table>`` for page layout, not data: a navigation column, a
spacer row, the whole article in one cell. Written as table rows those give a corpus lines like
``|  |  |  |  |`` and ``|  | Home News | The article ... (2,000 characters) |  |``.

:func:`dissolve_layout_rows` keeps data rows and writes layout rows as the text they hold:

* a row whose cells are all empty (a spacer) is dropped;
* a row with a cell of at least :data:`LAYOUT_CELL_CHARS` characters (prose, not a datum) is
  written as its non-empty cells, one per line;
* a row with a single non-empty cell is written as that cell, unless its table (the run of rows
  and header rules it is in) has a row with several (then its empty cells are padding that keeps
  the value in its column: a data row);
* a header rule stays only under a row that stayed a table row.

Rows with several short cells, the data tables issue 13 asked to keep, are left as they are.
"""

from __future__ import annotations

import re
from itertools import groupby

#: a cell this long is prose laid out by a table, not a table's datum (data cells in the 990
#: evaluation pages' tables are up to ~250 characters: a notes column; layout cells run to 7,000)
LAYOUT_CELL_CHARS = 400

#: a table's header rule (``|---|:---:|``)
TABLE_RULE_RE = re.compile(r"\|(?:[ \t]*:?-+:?[ \t]*\|)+")
_UNESCAPED_BAR = re.compile(r"(?<!\\)\|")
#: a line that starts a table row (searched in "\n" + text: a literal start is cheap)
_ROW_START = re.compile(r"\n[ \t]*\|")

_RULE, _EMPTY, _SINGLE, _LONG, _DATA = range(5)


def row_cells(row: str) -> list[str]:
    """The cells of one row line (stripped, still escaped): ``"| a | b\\|c |"`` -> ``["a", "b\\|c"]``."""
    return [cell.strip() for cell in _UNESCAPED_BAR.split(row.strip()[1:-1])]


def is_table_row(stripped: str) -> bool:
    """Whether a stripped line is a row (or header rule) as extraction writes a table: ``| ... |``."""
    return len(stripped) >= 2 and stripped[0] == "|" and stripped[-1] == "|"


def _kind(cells: list[str]) -> int:
    filled = [cell for cell in cells if cell]
    if not filled:
        return _EMPTY
    if max(len(cell) for cell in filled) >= LAYOUT_CELL_CHARS:
        return _LONG
    return _SINGLE if len(filled) == 1 else _DATA


def dissolve_layout_rows(text: str) -> str:
    """``text`` with its layout rows written as plain lines and its spacer rows dropped (module doc)."""
    if _ROW_START.search("\n" + text) is None:
        return text
    lines = text.split("\n")
    kinds: list[int | None] = [None] * len(lines)  # None: a line of text, not of a table
    cells: dict[int, list[str]] = {}
    for i, line in enumerate(lines):
        stripped = line.strip()
        if is_table_row(stripped):
            if TABLE_RULE_RE.fullmatch(stripped):
                kinds[i] = _RULE
            else:
                cells[i] = row_cells(stripped)
                kinds[i] = _kind(cells[i])
    # a lone cell in a table that has data rows keeps its row: the empty cells are padding that
    # keeps the value in its column (trafilatura #633); a table is a run of rows and header rules
    in_data_table: list[bool] = []
    for in_table, run in groupby(kinds, key=lambda kind: kind is not None):
        run_kinds = list(run)
        in_data_table += [in_table and _DATA in run_kinds] * len(run_kinds)

    out: list[str] = []
    last_row_kept = False  # the line before is a row that stayed a table row
    for i, line in enumerate(lines):
        kind = kinds[i]
        if kind is None:
            out.append(line)
            last_row_kept = False
            continue
        if kind == _RULE:  # a header rule: structure of the row above, if that stayed
            if last_row_kept:
                out.append(line)
            continue
        if kind == _SINGLE and in_data_table[i]:
            kind = _DATA  # padding cells keep the value in its column of a data table
        if kind == _DATA:
            out.append(line)
            last_row_kept = True
            continue
        if kind != _EMPTY:
            out.extend(cell.replace("\\|", "|") for cell in cells[i] if cell)
        last_row_kept = False
    return "\n".join(out)

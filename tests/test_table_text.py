"""Layout rows of extracted tables are written as text; data tables stay tables (table_text)."""

from refinery.stages.extract import clean_text
from refinery.stages.line_corrections import LineCorrections
from refinery.stages.table_text import LAYOUT_CELL_CHARS, dissolve_layout_rows, row_cells

PROSE = ("The club was founded in 1990 in the living room of its first chair, and the first members "
         "met every Sunday on a borrowed field behind the old mill. ") * 4


def test_row_cells_split_on_unescaped_bars_only() -> None:
    assert row_cells("| a | b \\| c |  | ") == ["a", "b \\| c", ""]


def test_spacer_rows_go_and_a_cell_of_prose_becomes_its_own_lines() -> None:
    assert len(PROSE) >= LAYOUT_CELL_CHARS
    text = f"|  |  |  | \n|  | Home \\| News | {PROSE} | \n|  |  | \nAfter the table."
    assert dissolve_layout_rows(text) == f"Home | News\n{PROSE.strip()}\nAfter the table."


def test_a_data_table_is_left_as_it_is() -> None:
    table = ("| Constituency | Member | Email | \n|---|---|---|\n| Aberconwy | Robin Millar | a@b | \n"
             "| Aldershot | Leo Docherty |  | ")
    text = "Below is a list:\n" + table + "\nEnd."
    assert dissolve_layout_rows(text) == text
    assert dissolve_layout_rows("no table here") == "no table here"


def test_a_lone_cell_is_a_line_unless_it_pads_a_data_row() -> None:
    # a column of one-cell rows is a layout menu
    assert dissolve_layout_rows("| Menu | \n| HandMade |  | \n| Radio Jam | ") == "Menu\nHandMade\nRadio Jam"
    # next to a data row, the empty cells keep the value in its column (trafilatura #633)
    data = "| Seamus | 1996 | He used this spell in class. | \n|  |  | He used it again at the hut. | "
    assert dissolve_layout_rows(data) == data
    # a header row with one filled cell over its rule heads the data rows below the rule
    headed = "| Results |  |  |\n|---|---|---|\n| 1 | Oslo | 12.4 |"
    assert dissolve_layout_rows(headed) == headed


def test_a_header_rule_stays_only_under_a_row_that_stayed() -> None:
    assert dissolve_layout_rows(f"| Feb 1 | {PROSE} | \n|---|---|\n| Jun 15 | Interns arrive | ") == (
        f"Feb 1\n{PROSE.strip()}\n| Jun 15 | Interns arrive | ")
    assert dissolve_layout_rows("|---|---|---|\n| A | B | C | \n|---|---|---|\n| 1 | 2 | 3 |") == (
        "| A | B | C | \n|---|---|---|\n| 1 | 2 | 3 |")  # a rule over no row goes


def test_clean_text_dissolves_layout_rows_before_line_corrections_see_them() -> None:
    """Spacer rows were kept by line_corrections (3+ tokens of "|"): now they are gone, and a menu
    laid out as one-cell rows meets RefinedWeb's single-word rule like any other menu."""
    raw = f"|  |  | \n| Menu | \n| Archive | \n|  | {PROSE} | "
    cleaned = clean_text(raw)
    assert cleaned == f"Menu\nArchive\n{PROSE.strip()}"
    corrected, removed, _ = LineCorrections().correct(cleaned)
    assert corrected == PROSE.strip() and removed == 2
    assert LineCorrections().correct(raw)[0].startswith("|  |  |")  # before: the debris stayed

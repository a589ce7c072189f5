"""Text tables (``query``/``search`` pages, ``process`` tracks) show every cell on its own line and in its order:
a name stored before the name rule, with a newline, an escape or a bidi override, cannot forge rows."""

from __future__ import annotations

import io

import pytest

from gallery.queries import Page
from pipeline.commands.tables import render
from pipeline.sinks.outputs import ConsoleTableSink

FORGERS = {
    "newline": "Ann\nbob        2  True",
    "carriage return": "Ann\r2026-01-01",
    "ESC": "Ann\x1b[2K\x1b[1A",
    "right-to-left override": "Ann\u202eeeL",
    "NUL": "Ann\x00",
    "line separator": "Ann\u2028Bob",
}


@pytest.mark.parametrize("name", FORGERS.values(), ids=FORGERS.keys())
def test_a_page_row_stays_one_line_without_control_characters(name):
    rows = [{"name": name, "media": 1, "watchlist": False}, {"name": "Bob", "media": 2, "watchlist": True}]
    text = render("identities", Page(rows, 1, 10, False), "table")
    lines = text.split("\n")
    assert len(lines) == 3 and lines[1].startswith("Ann") and lines[2].startswith("Bob")
    assert not any(ch in text for ch in "\r\x1b\x00\u202e\u2028")


def test_csv_and_json_keep_the_name_as_stored():
    rows = [{"name": "Ann\nLee", "media": 1}]
    assert '"Ann\nLee"' in render("identities", Page(rows, 1, 10, False), "csv")
    assert "Ann\\nLee" in render("identities", Page(rows, 1, 10, False), "json")


def test_the_process_table_escapes_its_cells():
    sink = ConsoleTableSink(io.StringIO())
    cells = ["-"] * len(ConsoleTableSink.COLUMNS)
    cells[0], cells[-1] = "a\n.mp4", "Ann\x1b[31m"
    sink.rows.append(("a.mp4", 0.0, tuple(cells)))
    sink.close()
    lines = sink.stream.getvalue().splitlines()
    assert len(lines) == 2 and "a\\x0a.mp4" in lines[1] and "Ann\\x1b[31m" in lines[1]

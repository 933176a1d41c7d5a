"""CSV files that spreadsheets open safely (``metrics.csv``, the export's ``ids.csv``).

A cell that begins with ``=``, ``+``, ``-``, ``@`` (or a tab / carriage return) is run as a formula by Excel,
LibreOffice and Google Sheets, so a crafted image id could execute there (CSV injection). Such *string* cells get a
leading ``'`` (the OWASP rule; spreadsheets hide it, a program reading the file strips it). Numbers are written as
they are, so a negative value stays ``-0.5``.
"""

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value``, with ``'`` in front when it is a string a spreadsheet would take as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A header line and one line per row (a missing key is an empty cell), every cell through :func:`safe_cell`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([safe_cell(column) for column in columns])
    writer.writerows([safe_cell(row.get(column, "")) for column in columns] for row in rows)
    return buffer.getvalue()

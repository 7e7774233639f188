"""A results table of the GPU check: each row measured, skipped with its reason or failed with its error,
and printed as soon as it is known."""

from __future__ import annotations

import traceback
from collections.abc import Callable


class Table:
    """A markdown table titled ``title`` whose first column labels the rows; ``note`` says what was measured."""

    def __init__(self, title: str, columns: list[str], note: str = "") -> None:
        self.title, self.columns, self.note = title, columns, note
        self.rows: list[list[str]] = []
        self.failures = 0
        self.seconds = 0.0  # the part's wall time, set by whoever ran it

    def add(self, label: str, measure: Callable[[], list[str]]) -> None:
        """A row of ``measure()``'s cells; an error fails this row only (a GPU is rare: the other rows run on)."""
        try:
            cells = measure()
        except Exception as error:
            self.fail(label, error)
        else:
            self._row(label, cells)

    def skip(self, label: str, reason: str) -> None:
        print(f"skipped: {self.title} | {label}: {reason}", flush=True)
        self._row(label, [f"skipped: {reason}"])

    def fail(self, label: str, error: Exception) -> None:
        traceback.print_exception(error)
        self.failures += 1
        message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        self._row(label, [f"failed: {type(error).__name__}: {message}".replace("|", "/")])

    def _row(self, label: str, cells: list[str]) -> None:
        row = [label, *cells, *[""] * (len(self.columns) - 1 - len(cells))]
        self.rows.append(row)
        print(f"{self.title} | {' | '.join(row)}", flush=True)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", f"{self.note} Took {self.seconds:.0f} s.".lstrip(), ""]
        lines += ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

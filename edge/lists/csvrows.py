"""Reading list CSVs (plate, list_id, reason_code, valid_until) with line-numbered errors.

Error messages name the file, the line, the column and what is wrong, but never echo a field's
value (not the plate, and no other cell either: in a CSV with shifted or swapped columns any cell
may hold a plate), so they can be pasted into a ticket without spreading the list.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from edge.lists.hashing import PlateError, normalise_plate
from edge.lists.model import REASON_RE, day_from_number, day_number

ADD_COLUMNS = ("plate", "list_id", "reason_code", "valid_until")
REMOVE_COLUMNS = ("plate", "list_id")
MAX_DAY = 65535


@dataclass(frozen=True)
class Row:
    line: int
    plate: str  # normalised
    list_id: str
    reason: str = ""
    until: int = 0  # day number, 0 = no per-entry expiry


@dataclass(frozen=True)
class RowError:
    """One bad row: where it is and what is wrong; `reason` never contains a field value."""

    line: int
    reason: str
    column: str = ""  # e.g. "2 (list_id)"; empty when the whole row is at fault
    file: str = ""  # the CSV file the row is in

    def text(self, with_file: bool = True) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        if with_file and self.file:
            where = f"{self.file} {where}"
        return f"{where}: {self.reason}"

    def __str__(self) -> str:
        return self.text()


class CsvError(ValueError):
    """The CSV has bad rows; `errors` lists every one of them."""

    def __init__(self, path: Path, errors: list[RowError]):
        # errors from another file (a delta reads an add and a remove CSV) keep their file name
        shown = "\n  ".join(e.text(with_file=e.file != str(path)) for e in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        super().__init__(f"{path}: {len(errors)} bad row(s):\n  {shown}{more}")
        self.errors = errors


def _header_problem(header: list[str], columns: tuple[str, ...], required: tuple[str, ...]) -> str | None:
    """What is wrong with the header row, naming only expected column names and positions (the first
    line of a CSV without a header row is data, and must not be echoed)."""
    problems = []
    missing = [c for c in required if c not in header]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    unknown = [str(n) for n, h in enumerate(header, 1) if h not in columns]
    if unknown:
        problems.append(f"column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                        f"{'are not expected names' if len(unknown) > 1 else 'is not an expected name'}")
    twice = sorted({h for h in header if h in columns and header.count(h) > 1})
    if twice:
        problems.append(f"{', '.join(twice)} given more than once")
    if not problems:
        return None
    hint = " (is the header row missing?)" if missing and len(unknown) == len(header) else ""
    return f"the first line must be the header {','.join(columns)}: {'; '.join(problems)}{hint}"


def read_rows(path: Path, known_lists: set[str], today: date, remove: bool = False) -> tuple[list[Row], list[RowError]]:
    """All good rows and all row errors; the header must name the expected columns."""
    path = Path(path)
    columns = REMOVE_COLUMNS if remove else ADD_COLUMNS
    rows: list[Row] = []
    errors: list[RowError] = []
    seen: dict[tuple[str, str], int] = {}
    file = str(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise CsvError(path, [RowError(0, f"cannot open: {e.strerror}", file=file)]) from None
    with f:
        reader = csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader, [])]
        except (csv.Error, UnicodeDecodeError) as e:
            raise CsvError(path, [RowError(1, f"unreadable header: {_safe_reason(e)}", file=file)]) from None
        required = columns if remove else columns[:3]
        if not any(header):
            raise CsvError(path, [RowError(1, f"the first line must be the header {','.join(columns)}, "
                                              "but it is empty", file=file)])
        problem = _header_problem(header, columns, required)
        if problem:
            raise CsvError(path, [RowError(1, problem, file=file)])
        col = {c: header.index(c) for c in header}
        where = {c: f"{n + 1} ({c})" for c, n in col.items()}
        ids = sorted(known_lists)
        known = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "") if ids else "none"

        def bad(line: int, reason: str, column: str = "") -> None:
            errors.append(RowError(line, reason, where.get(column, ""), file))

        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as e:
                bad(reader.line_num, f"unreadable: {_safe_reason(e)}")
                continue
            line = reader.line_num
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) != len(header):
                bad(line, f"expected {len(header)} fields, got {len(fields)}")
                continue
            get = lambda c: fields[col[c]].strip() if c in col else ""  # noqa: E731
            try:
                plate = normalise_plate(get("plate"))
            except PlateError as e:  # its message never contains the plate
                bad(line, str(e), "plate")
                continue
            list_id = get("list_id")
            if list_id not in known_lists:
                bad(line, f"not a known list id (known: {known})", "list_id")
                continue
            reason = get("reason_code")
            if not REASON_RE.match(reason):
                bad(line, "reason code must be up to 32 characters A-Z a-z 0-9 . _ -", "reason_code")
                continue
            until = 0
            raw = get("valid_until")
            if raw:
                try:
                    d = date.fromisoformat(raw)
                except ValueError:
                    bad(line, "not a date YYYY-MM-DD (or leave it empty for no expiry)", "valid_until")
                    continue
                if d < today:
                    bad(line, f"date is already past (today is {today.isoformat()})", "valid_until")
                    continue
                until = day_number(d)
                if until > MAX_DAY:
                    bad(line, f"date is too far in the future (latest is {day_from_number(MAX_DAY).isoformat()})", "valid_until")
                    continue
            key = (plate, list_id)
            if key in seen:
                bad(line, f"duplicate of line {seen[key]} (same plate and list)")
                continue
            seen[key] = line
            rows.append(Row(line, plate, list_id, reason, until))
    return rows, errors


def _safe_reason(e: Exception) -> str:
    """A decoding or CSV syntax error in words that hold no text of the file (csv.Error messages
    name no field content)."""
    if isinstance(e, UnicodeDecodeError):
        return "not valid UTF-8 text (save the file as UTF-8)"
    return str(e)

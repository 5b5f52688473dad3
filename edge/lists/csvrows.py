"""Reading list CSVs (plate, list_id, reason_code, valid_until) with line-numbered errors.

Error messages name the line and what is wrong, never the plate itself, so they can be pasted
into a ticket without spreading the list.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from edge.lists.hashing import PlateError, normalise_plate
from edge.lists.model import REASON_RE, day_number

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
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class CsvError(ValueError):
    """The CSV has bad rows; `errors` lists every one of them."""

    def __init__(self, path: Path, errors: list[RowError]):
        shown = "\n  ".join(str(e) for e in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        super().__init__(f"{path}: {len(errors)} bad row(s):\n  {shown}{more}")
        self.errors = errors


def read_rows(path: Path, known_lists: set[str], today: date, remove: bool = False) -> tuple[list[Row], list[RowError]]:
    """All good rows and all row errors; the header must name the expected columns."""
    path = Path(path)
    columns = REMOVE_COLUMNS if remove else ADD_COLUMNS
    rows: list[Row] = []
    errors: list[RowError] = []
    seen: dict[tuple[str, str], int] = {}
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise CsvError(path, [RowError(0, f"cannot open: {e.strerror}")]) from None
    with f:
        reader = csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader, [])]
        except (csv.Error, UnicodeDecodeError) as e:
            raise CsvError(path, [RowError(1, f"unreadable header: {e}")]) from None
        required = columns if remove else columns[:3]
        if any(c not in header for c in required) or any(c not in columns for c in header):
            raise CsvError(path, [RowError(1, f"header must be {','.join(columns)}, got {','.join(header) or '(empty)'}")])
        col = {c: header.index(c) for c in header}
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as e:
                errors.append(RowError(reader.line_num, f"unreadable: {e}"))
                continue
            line = reader.line_num
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) != len(header):
                errors.append(RowError(line, f"expected {len(header)} fields, got {len(fields)}"))
                continue
            get = lambda c: fields[col[c]].strip() if c in col else ""  # noqa: E731
            try:
                plate = normalise_plate(get("plate"))
            except PlateError as e:
                errors.append(RowError(line, f"bad plate: {e}"))
                continue
            list_id = get("list_id")
            if list_id not in known_lists:
                errors.append(RowError(line, f"unknown list id {list_id!r}"))
                continue
            reason = get("reason_code")
            if not REASON_RE.match(reason):
                errors.append(RowError(line, "reason code must be up to 32 characters A-Z a-z 0-9 . _ -"))
                continue
            until = 0
            raw = get("valid_until")
            if raw:
                try:
                    d = date.fromisoformat(raw)
                except ValueError:
                    errors.append(RowError(line, f"valid_until {raw!r} is not a date YYYY-MM-DD"))
                    continue
                if d < today:
                    errors.append(RowError(line, f"valid_until {raw} is already past"))
                    continue
                until = day_number(d)
                if until > MAX_DAY:
                    errors.append(RowError(line, f"valid_until {raw} is too far in the future"))
                    continue
            key = (plate, list_id)
            if key in seen:
                errors.append(RowError(line, f"duplicate of line {seen[key]} (same plate and list)"))
                continue
            seen[key] = line
            rows.append(Row(line, plate, list_id, reason, until))
    return rows, errors

"""A generic CSV transformer configured by column names: onboard a CSV batch drop with YAML only.

The CSV twin of :mod:`~carrierwatch.transformers.json_mapping`, built on the same mapping model
and the same event machinery: a partner that drops CSV files names ``csv_mapping`` as its
transformer and describes its files in the ``mapping:`` block of ``partners/<id>.yaml``. Every
key of the JSON mapping works here, with column names where the JSON mapping has paths; one row
is one event (so ``events`` and the ``error*`` keys do not apply), and a ``csv:`` block says how
the file is written. Example (a regional carrier's nightly drop)::

    transformer: csv_mapping
    mapping:
      csv:
        delimiter: ","              # ";" and "\\t" are common too (one character)
        quotechar: '"'
        escapechar: null            # e.g. "\\\\" when the partner escapes instead of doubling quotes
        doublequote: true           # "" inside a quoted cell is one "
        encoding: utf-8             # a UTF-8 BOM is skipped; cp1252, latin-1, utf-16 … also work
        skip_rows: 0                # records before the header (a report title, say)
        header: true                # false: no header row, `columns` names the columns by position
        columns: [tracking_number, status_code, local_timestamp, time_zone, location, reason]
        optional_columns: [service_level, promised_by]
        unknown_columns: reject     # ignore (default): other columns are allowed and not read
        max_cell_chars: 1000        # a longer value in a column the mapping reads: row rejected
      tracking_number: tracking_number
      code: status_code             # codebook key (a list: most specific first)
      reason_code: reason           # looked up as <reason_prefix><value>
      time: {path: local_timestamp, format: iso, zone_path: time_zone}
      location: {city_region_postal: location}   # "Boise, ID 83702"; or city/region/… columns
      service_level: {path: service_level, lower: true}
      promised_by: {path: promised_by}            # a bare date: the end of that day

How a file is read:

- **text**: decoded with ``csv.encoding`` (a file that does not decode is a dead letter at ``$``);
  the standard :mod:`csv` module splits it with the ``csv:`` dialect options; every cell is
  stripped of surrounding blanks and an empty cell is an absent value;
- **header**: with ``header: true`` the first record (after ``skip_rows``) names the columns,
  in any order. With ``columns`` declared, every one of them must be in it and
  ``optional_columns`` may be; with ``unknown_columns: reject`` no other name may. Without
  ``columns``, the columns the mapping must read (tracking number, codes, time) must be there.
  A wrong header or a repeated column is a dead letter for the whole file at ``$``. With
  ``header: false`` the names of ``columns`` (then ``optional_columns``) are given to the cells
  by position;
- **rows**: one event per row; a blank line is skipped. A bad row (wrong number of cells, a
  missing tracking number, code or time, an unreadable time, an unknown zone, a value longer than
  ``max_cell_chars``) is a dead letter at ``row[<n>]`` or ``row[<n>].<column>``, where ``n``
  counts data rows from 1; the other rows still produce events. A file without data rows is a
  dead letter at ``$``;
- **values**: as in :mod:`~carrierwatch.transformers.json_mapping` (codebook lookups and gaps,
  time formats and zones, locations, promises, attempts, proof, service level).

Examples
--------
>>> from carrierwatch.core.codebook import Codebook
>>> from carrierwatch.core.partner import PartnerSpec
>>> from carrierwatch.transformers.base import TransformContext
>>> spec = PartnerSpec(id="demo", display_name="Demo", transformer="csv_mapping", format="csv",
...                    default_timezone="Europe/Paris",
...                    mapping={"csv": {"delimiter": ";"}, "tracking_number": "Colis",
...                             "code": "Statut", "time": {"path": "Date",
...                                                        "format": "%d/%m/%Y %H:%M"}})
>>> book = Codebook.from_yaml("version: 1\\npartner: demo\\ncodes:\\n"
...                           "  LIV: {status: delivered, confidence: 1.0}\\n")
>>> raw = "Colis;Statut;Date\\nFR1;LIV;02/03/2026 14:05\\nFR2;LIV;hier\\n".encode()
>>> result = transform(raw, TransformContext(spec, book, 1_772_467_200_000))
>>> [(e.tracking_number, e.status, e.event_time_local) for e in result.events]
[('FR1', 'delivered', '02/03/2026 14:05')]
>>> [(d.path, d.error[:32]) for d in result.dead_letters]
[('row[2].Date', "unreadable time 'hier' (%d/%m/%Y")]
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from typing import Any, Literal, cast

from pydantic import Field, field_validator, model_validator

from carrierwatch.core.partner import PartnerSpec
from carrierwatch.transformers.base import (
    Emitter,
    PayloadError,
    TransformContext,
    TransformResult,
    decode_text,
)
from carrierwatch.transformers.json_mapping import (
    Flavor,
    JsonMapping,
    ServiceLevelField,
    _Compiled,
    _event,
    _Frozen,
    _Path,
    compile_mapping,
)

__all__ = ["CSV", "CsvMapping", "CsvOptions", "check_spec", "data_row_lines", "transform"]


class CsvOptions(_Frozen):
    """How the partner writes its files (the ``csv:`` block); see the module docstring."""

    delimiter: str = ","
    quotechar: str = '"'
    escapechar: str | None = None
    doublequote: bool = True
    encoding: str = "utf-8"
    skip_rows: int = 0
    header: bool = True
    columns: list[str] | None = None
    optional_columns: list[str] = Field(default_factory=list)
    unknown_columns: Literal["ignore", "reject"] = "ignore"
    max_cell_chars: int = 1000

    @field_validator("delimiter", "quotechar", "escapechar")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value in "\r\n"):
            raise ValueError(f"must be one character other than a line break, got {value!r}")
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value

    @field_validator("skip_rows", "max_cell_chars")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @model_validator(mode="after")
    def _columns(self) -> CsvOptions:
        if not self.header and not self.columns:
            raise ValueError("header: false needs `columns` (the column names, by position)")
        names = [*(self.columns or []), *self.optional_columns]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"columns named twice: {repeated}")
        if self.delimiter == self.quotechar:
            raise ValueError("delimiter and quotechar must differ")
        return self


class CsvMapping(JsonMapping):
    """The ``mapping:`` block of a CSV partner: the JSON mapping's keys, naming columns, plus
    ``csv:``. ``events`` and the ``error*`` keys do not apply (one row is one event)."""

    csv: CsvOptions = CsvOptions()

    @model_validator(mode="after")
    def _csv_fields(self) -> CsvMapping:
        json_only = sorted({"events", "error", "error_code", "error_message"}
                           & self.model_fields_set)
        if json_only:
            raise ValueError(f"{', '.join(json_only)}: JSON-only keys (in a CSV file, one row "
                             f"is one event)")
        declared = self.csv.columns
        if declared is not None:
            known = {*declared, *self.csv.optional_columns}
            unknown = sorted(set(_mapped_columns(self)) - known)
            if unknown:
                raise ValueError(f"the mapping reads columns {unknown} that `csv.columns` and "
                                 f"`csv.optional_columns` do not declare")
        return self


def _mapped_columns(mapping: JsonMapping) -> list[str]:
    """Every column the mapping reads, in the order of its keys."""
    names: list[str | None] = [mapping.tracking_number, mapping.discriminator,
                               mapping.shipment_id, *mapping.code, mapping.reason_code,
                               mapping.attempt]
    service = mapping.service_level
    names.append(service.path if isinstance(service, ServiceLevelField) else service)
    if mapping.location is not None:
        names.extend(mapping.location.model_dump().values())
    if mapping.proof is not None:
        names.append(mapping.proof.path)
    for field in (mapping.time, mapping.eta_start, mapping.eta_end, mapping.promised_by,
                  mapping.partner_received_time):
        if field is not None:
            names.extend((field.path, field.zone_path))
    return list(dict.fromkeys(name for name in names if name is not None))


CSV = Flavor("csv_mapping", CsvMapping, columns=True)


def check_spec(spec: PartnerSpec) -> None:
    """Validate a CSV partner's ``mapping:``; raise a
    :class:`~carrierwatch.core.errors.PartnerLoadError` naming the bad key."""
    compile_mapping(spec, CSV)


# --- reading a file --------------------------------------------------------------------------


class _Layout:
    """The columns of one file: their names by position and what the rows must hold."""

    __slots__ = ("names", "needed", "width_max", "width_min")

    def __init__(self, names: list[str], width_min: int, width_max: int,
                 needed: list[str]) -> None:
        self.names = names
        self.width_min = width_min
        self.width_max = width_max
        self.needed = needed


def _required_columns(compiled: _Compiled) -> list[str]:
    mapping = compiled.mapping
    return list(dict.fromkeys([mapping.tracking_number, *mapping.code, mapping.time.path]))


def _header_layout(header: list[str], options: CsvOptions, compiled: _Compiled) -> _Layout:
    """The layout a header gives, or a PayloadError at ``$`` saying what is wrong with it."""
    names = [name.strip() for name in header]
    mapped = _mapped_columns(compiled.mapping)
    if options.columns is not None:
        required = list(options.columns)
        expected = (f"{','.join(required)}"
                    + (f"[,{','.join(options.optional_columns)}]"
                       if options.optional_columns else ""))
        known = {*required, *options.optional_columns}
    else:
        required = _required_columns(compiled)
        optional = [name for name in mapped if name not in required]
        expected = ",".join(required) + (f"[,{','.join(optional)}]" if optional else "")
        known = set(mapped)
    reject = options.unknown_columns == "reject"
    checked = names if reject else [n for n in names if n in known]
    repeated = sorted({n for n in checked if checked.count(n) > 1})
    if repeated:
        raise PayloadError("$", f"repeated columns {repeated}")
    missing = [n for n in required if n not in names]
    unknown = [n for n in names if n not in known] if reject else []
    if missing or unknown:
        problem = f"missing {missing}, unknown {unknown}" if reject else f"missing {missing}"
        raise PayloadError("$", f"wrong header: {problem}; expected {expected}")
    return _Layout(names, len(names), len(names), [n for n in mapped if n in names])


def _fixed_layout(options: CsvOptions, compiled: _Compiled) -> _Layout:
    columns = options.columns or []
    names = [*columns, *options.optional_columns]
    return _Layout(names, len(columns), len(names),
                   [n for n in _mapped_columns(compiled.mapping) if n in names])


def _decode(raw: bytes, encoding: str) -> str:
    if codecs.lookup(encoding).name == "utf-8":
        return decode_text(raw)  # skips a BOM
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise PayloadError("$", f"not {encoding} text: {exc}") from None
    return text.removeprefix("\ufeff")


def _reader(text: str, options: CsvOptions) -> Iterator[list[str]]:
    return csv.reader(io.StringIO(text, newline=""), delimiter=options.delimiter,
                      quotechar=options.quotechar, escapechar=options.escapechar,
                      doublequote=options.doublequote, strict=False)


def data_row_lines(raw: bytes, spec: PartnerSpec) -> list[int]:
    """The line of the file (from 1) on which each data row starts: ``row[n]`` of a dead letter
    is on line ``data_row_lines(raw, spec)[n - 1]`` (rows counted as :func:`transform` does).

    >>> from carrierwatch.core.partner import PartnerSpec
    >>> spec = PartnerSpec(id="pp", display_name="P", transformer="csv_mapping", format="csv",
    ...                    mapping={"csv": {"columns": ["n", "c", "t"]}, "tracking_number": "n",
    ...                             "code": "c", "time": {"path": "t", "format": "iso"}})
    >>> data_row_lines(b'n,c,t\\n\\nA,"x\\ny",1\\nB,c,2\\n', spec)
    [3, 5]
    """
    try:
        options = cast(CsvMapping, compile_mapping(spec, CSV).mapping).csv
        reader: Any = _reader(_decode(raw, options.encoding), options)
    except Exception:
        return []
    lines: list[int] = []
    try:
        for _ in range(options.skip_rows + (1 if options.header else 0)):
            next(reader, None)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:
                lines.append(start)
                continue
            if not row or all(not cell.strip() for cell in row):
                continue
            lines.append(start)
    except csv.Error:
        pass
    return lines


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Normalize one CSV file of a partner described by a ``mapping:``; see the module docstring.
    """
    emitter = Emitter(raw, ctx)
    compiled = compile_mapping(ctx.partner, CSV)
    options = cast(CsvMapping, compiled.mapping).csv
    reader = _reader(_decode(raw, options.encoding), options)
    try:
        for _ in range(options.skip_rows):
            next(reader, None)
        header = next(reader, None) if options.header else None
    except csv.Error as exc:
        emitter.dead_letter("$", f"unreadable CSV header: {exc}")
        return emitter.result
    if options.header:
        if header is None:
            emitter.dead_letter("$", "empty file: no header")
            return emitter.result
        layout = _header_layout(header, options, compiled)
    else:
        layout = _fixed_layout(options, compiled)
    required = _required_paths(compiled)
    number = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            number += 1
            emitter.dead_letter(f"row[{number}]", f"unreadable CSV row: {exc}")
            continue
        if not row or all(not cell.strip() for cell in row):
            continue  # blank line
        number += 1
        where = f"row[{number}]"
        with emitter.element(where):
            values = _row_values(row, layout, options, where)
            for path in required:
                if isinstance(path, tuple):
                    if not any(values.get(p.text) for p in path):
                        raise PayloadError(path[0].where(where), "missing required value")
                elif not values.get(path.text):
                    raise PayloadError(path.where(where), "missing required value")
            _event(emitter, ctx, compiled, values, values, where)
    if number == 0:
        emitter.dead_letter("$", "no data rows")
    return emitter.result


def _required_paths(compiled: _Compiled) -> list[_Path | tuple[_Path, ...]]:
    """Tracking number, codes (any one of them) and time: a row without them is no event."""
    tracking = compiled.paths["tracking_number"]
    time = compiled.times["time"]
    assert tracking is not None and time is not None
    return [tracking, compiled.codes, time.path]


def _row_values(row: list[str], layout: _Layout, options: CsvOptions, where: str
                ) -> dict[str, Any]:
    """The stripped cells of the columns the mapping reads, by column name."""
    if not layout.width_min <= len(row) <= layout.width_max:
        expected = (str(layout.width_min) if layout.width_min == layout.width_max
                    else f"{layout.width_min} to {layout.width_max}")
        raise PayloadError(where, f"expected {expected} columns, got {len(row)}")
    cells = dict(zip(layout.names, row, strict=False))
    values: dict[str, Any] = {}
    limit = options.max_cell_chars
    for name in layout.needed:
        cell = cells.get(name)
        if cell is None:
            continue
        if len(cell) > limit:
            raise PayloadError(f"{where}.{name}", f"a value of {len(cell):,} characters, over "
                                                  f"the limit of {limit:,} (csv.max_cell_chars)")
        values[name] = cell.strip()
    return values

"""Tests of the generic CSV transformer (``csv_mapping``): a CSV partner onboarded by YAML alone.

valley_express is onboarded with it (its hand-written transformer is gone; its own tests and
golden files are unchanged); a second partner, a Brazilian carrier's semicolon-separated cp1252
export with day-first dates, is built here from YAML and exercises every mapping key.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from carrierwatch.core.codebook import Codebook
from carrierwatch.core.errors import PartnerLoadError
from carrierwatch.core.partner import PartnerSpec
from carrierwatch.transformers import csv_mapping, json_mapping
from carrierwatch.transformers.base import TransformContext, TransformResult, run_transform
from carrierwatch.transformers.json_mapping import parse_place
from carrierwatch.transformers.registry import load_partner, load_registry

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000

BOOK = Codebook.from_yaml("""\
version: 1
partner: rio_cargas
codes:
  COLETADO: {status: picked_up, confidence: 1.0}
  EM_ROTA: {status: out_for_delivery, confidence: 1.0}
  ENTREGUE: {status: delivered, confidence: 1.0}
  TENTATIVA: {status: delivery_attempted, reason: unknown, confidence: 0.9}
  motivo/AUSENTE: {status: delivery_attempted, reason: recipient_not_available, confidence: 1.0}
""")

SPEC_YAML = """\
id: rio_cargas
display_name: Rio Cargas
kind: batch
format: csv
delivery: batch
transformer: csv_mapping
default_country: BR
mapping:
  csv: {delimiter: ";", encoding: cp1252, skip_rows: 1}
  tracking_number: Objeto
  shipment_id: Pedido
  code: [Situação]
  reason_code: Motivo
  reason_prefix: "motivo/"
  time: {path: Data, format: "%d/%m/%Y %H:%M", zone: America/Sao_Paulo}
  location: {country: País, region: UF, city: Cidade, postal_code: CEP}
  attempt: Tentativa
  proof: {path: Comprovante, values: {FOTO: photo, ASSINATURA: signature}}
  eta_start: {path: Janela início, format: iso}   # the format defaults to the time's
  eta_end: {path: Janela fim, format: iso}
  promised_by: {path: Prazo, format: "%d/%m/%Y"}
  service_level: {path: Serviço, lower: true}
"""
HEADER = ("Objeto;Pedido;Situação;Motivo;Data;País;UF;Cidade;CEP;Tentativa;Comprovante;"
          "Janela início;Janela fim;Prazo;Serviço;Observações")


def local_ms(text: str, zone: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


def spec_of(text: str = SPEC_YAML, **mapping: Any) -> PartnerSpec:
    data = yaml.safe_load(text)
    data["mapping"].update(mapping)
    return PartnerSpec.model_validate(data)


def run_csv(raw: bytes, spec: PartnerSpec | None = None) -> TransformResult:
    spec = spec or spec_of()
    csv_mapping.check_spec(spec)
    return run_transform(csv_mapping.transform, raw, TransformContext(spec, BOOK, RECEIVED))


def export(*rows: str) -> bytes:
    return "\r\n".join(("Relatório de entregas 02/03/2026", HEADER, *rows, "")).encode("cp1252")


# --- valley_express is config-only ------------------------------------------------------------


def test_valley_express_needs_no_python_of_its_own() -> None:
    partner = load_partner(ROOT / "partners" / "valley_express.yaml", ROOT / "codebooks")
    assert (partner.spec.transformer, partner.spec.format) == ("csv_mapping", "csv")
    assert not (ROOT / "src" / "carrierwatch" / "transformers" / "valley_express.py").exists()
    for module in ("csv_mapping.py", "json_mapping.py"):
        assert "valley" not in (ROOT / "src/carrierwatch/transformers" / module).read_text()


# --- a second CSV partner from YAML alone -----------------------------------------------------


def test_a_second_csv_partner_needs_only_yaml_and_every_key_is_read() -> None:
    result = run_csv(export(
        "BR123;PED-9;TENTATIVA;AUSENTE;02/03/2026 14:05;BR;SP;São Paulo;01310-100;1;;"
        "2026-03-03T09:00:00;2026-03-03T18:00:00;04/03/2026;EXPRESSO;cliente não estava",
        "BR123;PED-9;ENTREGUE;;03/03/2026 10:20;;RJ;Niterói;24020-000;2;FOTO;;;04/03/2026;"
        "EXPRESSO;",
    ))
    assert result.dead_letters == [] and result.gaps == []
    attempted, delivered = result.events
    assert (attempted.status, attempted.reason, attempted.raw_code) == (
        "delivery_attempted", "recipient_not_available", "TENTATIVA")
    assert attempted.event_time == local_ms("2026-03-02T14:05", "America/Sao_Paulo")
    assert not attempted.timezone_ambiguous and attempted.event_time_local == "02/03/2026 14:05"
    assert attempted.shipment_id == "PED-9" and attempted.attempt_number == 1
    assert attempted.location is not None
    assert (attempted.location.country, attempted.location.region, attempted.location.city,
            attempted.location.postal_prefix) == ("BR", "BR-SP", "São Paulo", "013")
    # a bare promise date means the end of that day, in the event's zone
    assert attempted.promised_by == local_ms("2026-03-04T23:59:59", "America/Sao_Paulo")
    assert attempted.eta_start == local_ms("2026-03-03T09:00:00", "America/Sao_Paulo")
    assert attempted.eta_end == local_ms("2026-03-03T18:00:00", "America/Sao_Paulo")
    assert attempted.service_level == "expresso"
    assert (delivered.status, delivered.proof_of_delivery, delivered.attempt_number) == (
        "delivered", "photo", 2)
    assert delivered.location is not None and delivered.location.country == "BR"  # default
    assert delivered.eta_start is None and delivered.eta_end is None


def test_bad_rows_are_dead_letters_naming_row_and_column_and_other_rows_still_count() -> None:
    good = "BR1;;ENTREGUE;;03/03/2026 10:20;BR;SP;Santos;11010-000;;;;;;PADRAO;"
    result = run_csv(export(
        good,
        good.replace("03/03/2026 10:20", "2026-03-03 10:20"),
        good.replace("BR1;", ";"),
        good.replace("ENTREGUE", ""),
        good.replace(";PADRAO;", ";PADRAO;;extra"),
        good.replace("SP;Santos", "SP;" + "x" * 1001),
        good.replace(";;;;;PADRAO", ";;;;31/02/2026;PADRAO"),
        good.replace("11010-000;;", "11010-000;três;"),
        good.replace("BR1", "BR9"),
    ))
    assert [e.tracking_number for e in result.events] == ["BR1", "BR9"]
    assert [(d.path, d.error.split(" (")[0].split(":")[0]) for d in result.dead_letters] == [
        ("row[2].Data", "unreadable time '2026-03-03 10"),
        ("row[3].Objeto", "missing required value"),
        ("row[4].Situação", "missing required value"),
        ("row[5]", "expected 16 columns, got 17"),
        ("row[6].Cidade", "a value of 1,001 characters, over the limit of 1,000"),
        ("row[7].Prazo", "unreadable time '31/02/2026'"),
        ("row[8].Tentativa", "expected a number, got 'três'"),
    ]


def test_a_date_without_a_time_of_day_is_rejected_for_the_event_and_a_day_end_for_promises(
        ) -> None:
    spec = spec_of(time={"path": "Data", "zone": "America/Sao_Paulo"},
                   promised_by={"path": "Prazo"})
    header = "Objeto;Situação;Data;Prazo"
    raw = (f"skipped\n{header}\nBR1;ENTREGUE;2026-03-03;\nBR2;ENTREGUE;2026-03-03 10:20;"
           f"2026-03-04\n").encode("cp1252")
    result = run_csv(raw, spec)
    assert [d.path for d in result.dead_letters] == ["row[1].Data"]
    assert "date_only" in result.dead_letters[0].error
    (event,) = result.events
    assert event.promised_by == local_ms("2026-03-04T23:59:59", "America/Sao_Paulo")
    lenient = spec_of(time={"path": "Data", "zone": "America/Sao_Paulo",
                            "date_only": "start_of_day"})
    (first, _) = run_csv(raw.replace(b"Prazo", b"Motivo"), lenient).events
    assert first.event_time == local_ms("2026-03-03T00:00", "America/Sao_Paulo")


# --- the file: header, positions, dialect, encodings -----------------------------------------

VALLEY_LIKE = """\
id: plain_csv
display_name: Plain CSV
transformer: csv_mapping
format: csv
default_timezone: America/Chicago
mapping:
  tracking_number: tracking
  code: code
  time: {path: at}
"""


def test_columns_by_position_without_a_header() -> None:
    spec = spec_of(VALLEY_LIKE, csv={"header": False, "columns": ["tracking", "code", "at"],
                                     "optional_columns": ["note"]})
    result = run_csv(b"T1,ENTREGUE,2026-03-02 10:00\nT2,ENTREGUE,2026-03-02 11:00,late\n"
                     b"T3,ENTREGUE\n", spec)
    assert [e.tracking_number for e in result.events] == ["T1", "T2"]
    assert [(d.path, d.error) for d in result.dead_letters] == [
        ("row[3]", "expected 3 to 4 columns, got 2")]
    assert result.events[0].event_time == local_ms("2026-03-02T10:00", "America/Chicago")


@pytest.mark.parametrize(("options", "raw"), [
    ({}, "\ufefftracking,code,at\nT1,ENTREGUE,2026-03-02 10:00\n".encode()),  # UTF-8 BOM
    ({"encoding": "utf-16"}, "tracking,code,at\nT1,ENTREGUE,2026-03-02 10:00\n".encode("utf-16")),
    ({"encoding": "cp1252", "delimiter": ";"},
     "tracking;code;at\r\nT1;ENTREGUE;2026-03-02 10:00\r\n".encode("cp1252")),
    ({"delimiter": "\t"}, b"tracking\tcode\tat\nT1\tENTREGUE\t2026-03-02 10:00\n"),
    ({}, b'"tracking","code","at"\n"T1","ENTREGUE","2026-03-02 10:00"\n'),
    ({"quotechar": "'"}, b"tracking,code,at\n'T1',ENTREGUE,2026-03-02 10:00\n"),
])
def test_dialects_and_encodings_of_real_drops(options: dict[str, Any], raw: bytes) -> None:
    result = run_csv(raw, spec_of(VALLEY_LIKE, csv=options))
    assert result.dead_letters == []
    assert [(e.tracking_number, e.status) for e in result.events] == [("T1", "delivered")]


def test_quoted_cells_keep_delimiters_quotes_and_line_breaks() -> None:
    spec = spec_of(VALLEY_LIKE, shipment_id="order")
    raw = b'tracking,code,at,order\nT1,ENTREGUE,2026-03-02 10:00,"A,""B""\nC"\n'
    (event,) = run_csv(raw, spec).events
    assert event.shipment_id == 'A,"B"\nC'
    escaped = spec_of(VALLEY_LIKE, shipment_id="order",
                      csv={"escapechar": "\\", "doublequote": False})
    (event,) = run_csv(b'tracking,code,at,order\nT1,ENTREGUE,2026-03-02 10:00,"A\\"B"\n',
                       escaped).events
    assert event.shipment_id == 'A"B'


@pytest.mark.parametrize(("options", "raw", "error"), [
    ({}, b"tracking,at\nT1,2026-03-02 10:00\n", "wrong header: missing ['code']; expected "
                                                "tracking,code,at"),
    ({"unknown_columns": "reject"}, b"tracking,code,at,x\nT1,A,2026-03-02 10:00,1\n",
     "wrong header: missing [], unknown ['x']; expected tracking,code,at"),
    ({}, b"tracking,code,code,at\nT1,A,B,2026-03-02 10:00\n", "repeated columns ['code']"),
    ({"columns": ["tracking", "code", "at", "hub"]}, b"tracking,code,at\nT1,A,2026-03-02\n",
     "wrong header: missing ['hub']; expected tracking,code,at,hub"),
    ({}, b"tracking,code,at\n\n", "no data rows"),
    ({}, b"", "empty file: no header"),
    ({"encoding": "cp1252"}, b"tracking,code,at\nT1,A,\x81\n", "not cp1252 text"),
    ({}, b"tracking,code,at\nT1,A,\xe9\n", "not UTF-8 text"),
])
def test_whole_file_problems_are_one_dead_letter_at_the_root(options: dict[str, Any], raw: bytes,
                                                             error: str) -> None:
    result = run_csv(raw, spec_of(VALLEY_LIKE, csv=options))
    assert result.events == [] and [d.path for d in result.dead_letters] == ["$"]
    assert result.dead_letters[0].error.startswith(error)
    assert result.dead_letters[0].raw == raw


def test_unknown_columns_are_ignored_by_default_and_unmapped_cells_are_not_read() -> None:
    raw = (b"note,tracking,code,at\n" + b"x" * 100_000 + b",T1,ENTREGUE,2026-03-02 10:00\n")
    (event,) = run_csv(raw, spec_of(VALLEY_LIKE)).events
    assert event.tracking_number == "T1"


def test_a_cell_over_the_csv_module_limit_is_a_dead_letter_and_the_next_row_still_counts(
        ) -> None:
    raw = (b'tracking,code,at\nT1,ENTREGUE,"' + b"x" * 200_000 + b'"\n'
           b"T2,ENTREGUE,2026-03-02 10:00\n")
    result = run_csv(raw, spec_of(VALLEY_LIKE))
    assert [e.tracking_number for e in result.events] == ["T2"]
    assert [d.path for d in result.dead_letters] == ["row[1]"]


# --- the mapping is checked when the partner loads --------------------------------------------


@pytest.mark.parametrize(("mapping", "message"), [
    ({"events": "rows"}, "events: JSON-only keys"),
    ({"csv": {"columns": ["tracking", "code"]}}, "reads columns ['at']"),
    ({"csv": {"header": False}}, "header: false needs `columns`"),
    ({"csv": {"delimiter": ";;"}}, "mapping.csv.delimiter"),
    ({"csv": {"encoding": "klingon"}}, "unknown text encoding"),
    ({"csv": {"columns": ["tracking", "code", "at", "code"]}}, "columns named twice"),
    ({"time": {"path": "at", "date_only": "noon"}}, "mapping.time.date_only"),
    ({"service_level": {"path": "s", "upper": True}}, "mapping.service_level"),
])
def test_check_spec_rejects_bad_csv_mappings(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(PartnerLoadError, match=message.replace("[", r"\[")):
        csv_mapping.check_spec(spec_of(VALLEY_LIKE, **mapping))


def test_column_names_are_any_text_for_csv_but_jmespath_for_json() -> None:
    spec = spec_of(VALLEY_LIKE, tracking_number="Tracking #")
    csv_mapping.check_spec(spec)
    with pytest.raises(PartnerLoadError, match="invalid JMESPath 'Tracking #'"):
        json_mapping.check_spec(spec)


def test_registry_loads_a_yaml_only_csv_partner(tmp_path: Path) -> None:
    (tmp_path / "partners").mkdir()
    (tmp_path / "codebooks").mkdir()
    (tmp_path / "partners" / "rio_cargas.yaml").write_text(SPEC_YAML, encoding="utf-8")
    (tmp_path / "codebooks" / "rio_cargas.yaml").write_text(
        (ROOT / "codebooks" / "metro_courier.yaml").read_text().replace(
            "partner: metro_courier", "partner: rio_cargas"), encoding="utf-8")
    registry = load_registry(tmp_path)
    assert not registry.failures, registry.failures
    result = registry.get("rio_cargas").transform(export(
        "BR1;;PICKED_UP;;02/03/2026 09:00;;SP;Campinas;13010-000;;;;;;PADRAO;"), RECEIVED)
    assert [(e.status, e.service_level) for e in result.events] == [("picked_up", "padrao")]


# --- hypothesis: whatever the cells hold, a file written in the dialect reads back ------------

cell_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@given(rows=st.lists(st.tuples(cell_text, cell_text), min_size=1, max_size=8),
       delimiter=st.sampled_from([",", ";", "\t", "|"]))
def test_any_cell_text_round_trips_through_the_dialect(rows: list[tuple[str, str]],
                                                       delimiter: str) -> None:
    spec = spec_of(VALLEY_LIKE, shipment_id="order", csv={"delimiter": delimiter},
                   time={"path": "at", "zone": "UTC"})
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(["tracking", "code", "at", "order"])
    kept = []
    for index, (order, noise) in enumerate(rows):
        writer.writerow([f"T{index}{noise}", "ENTREGUE", "2026-03-02 10:00", order])
        kept.append((f"T{index}{noise}".strip(), order.strip() or None))
    result = run_csv(out.getvalue().encode(), spec)
    assert [(e.tracking_number, e.shipment_id) for e in result.events] == kept
    assert result.dead_letters == []


@given(st.text(max_size=300))
def test_parse_place_reads_only_what_is_there(text: str) -> None:
    parsed = parse_place(text)
    if parsed is not None:
        city, region, postal = parsed
        assert city in text and region.lower() in text.lower()
        assert postal is None or postal.split()[0] in text
        assert len(city) <= 120 and 2 <= len(region) <= 3


@pytest.mark.parametrize("text", ["A" + " " * 32_000 + "B", "A, " + "B" * 1_000_000,
                                  ("Boise, ID 83702" * 10_000), "," * 100_000])
def test_parse_place_is_linear_on_hostile_cells(text: str) -> None:
    started = time.perf_counter()
    assert parse_place(text) is None
    assert time.perf_counter() - started < 0.05


def test_the_same_place_parser_serves_json_partners() -> None:
    spec = PartnerSpec.model_validate(yaml.safe_load("""
id: json_places
display_name: JSON places
transformer: json_mapping
default_country: US
mapping:
  tracking_number: id
  code: s
  time: {path: t}
  location: {city_region_postal: where}
"""))
    book = Codebook.from_yaml("version: 1\npartner: json_places\ncodes:\n"
                              "  D: {status: delivered, confidence: 1.0}\n")
    raw = (b'[{"id": "J1", "s": "D", "t": "2026-03-02T10:00:00Z", "where": "Reno, NV 89502"},'
           b' {"id": "J2", "s": "D", "t": "2026-03-02T10:00:00Z", "where": "12 Elm St, Reno"}]')
    first, second = run_transform(json_mapping.transform, raw,
                                  TransformContext(spec, book, RECEIVED)).events
    assert first.location is not None
    assert (first.location.region, first.location.city, first.location.postal_prefix) == (
        "US-NV", "Reno", "895")
    assert second.location is None


def test_a_row_that_fails_counts_no_gap_for_its_reason_code() -> None:
    result = run_csv(export(
        "BR1;;TENTATIVA;SUMIU;02/03/2026 14:05;BR;SP;Santos;;x;;;;;;",
        "BR1;;TENTATIVA;FUGIU;02/03/2026 14:06;BR;SP;Santos;;;;;;amanhã;;",
        "BR1;;TENTATIVA;SAIU;02/03/2026 14:07;BR;SP;Santos;;;;;;;;"))
    assert [d.path for d in result.dead_letters] == ["row[1].Tentativa", "row[2].Prazo"]
    assert result.gaps == ["motivo/SAIU"]

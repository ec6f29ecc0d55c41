"""BigQuery schema and value conversion: DuckDB's column types and Python values to BigQuery's REST shapes."""

from __future__ import annotations

import datetime as dt
import decimal

_SIMPLE = {
    "BIGINT": "INTEGER",
    "INTEGER": "INTEGER",
    "SMALLINT": "INTEGER",
    "TINYINT": "INTEGER",
    "HUGEINT": "INTEGER",
    "DOUBLE": "FLOAT",
    "FLOAT": "FLOAT",
    "BOOLEAN": "BOOLEAN",
    "VARCHAR": "STRING",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
    "BLOB": "BYTES",
}
_TO_DUCKDB = {
    "INTEGER": "BIGINT",
    "INT64": "BIGINT",
    "FLOAT": "DOUBLE",
    "FLOAT64": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
    "STRING": "VARCHAR",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMPTZ",
    "NUMERIC": "DECIMAL(38,9)",
    "BYTES": "BLOB",
}


def field_from_duckdb(name: str, duck_type) -> dict:
    """One schema field ({name, type, mode[, fields]}) for a DuckDB type (a DuckDBPyType or its text)."""
    text = str(duck_type).upper()
    if text.endswith("[]"):
        inner = field_from_duckdb(name, getattr(duck_type, "child", text[:-2]))  # child keeps a STRUCT's fields
        return {**inner, "mode": "REPEATED"}
    if text.startswith("STRUCT("):
        children = getattr(duck_type, "children", None) or []
        fields = [field_from_duckdb(child_name, child_type) for child_name, child_type in children]
        return {"name": name, "type": "RECORD", "mode": "NULLABLE", "fields": fields}
    if text.startswith("DECIMAL"):
        return {"name": name, "type": "NUMERIC", "mode": "NULLABLE"}
    return {"name": name, "type": _SIMPLE.get(text, "STRING"), "mode": "NULLABLE"}


def duckdb_type(field: dict) -> str:
    """The DuckDB column type for a BigQuery schema field (RECORD and REPEATED included)."""
    kind = field.get("type", "STRING").upper()
    if kind in ("RECORD", "STRUCT"):
        inner = ", ".join(f'"{f["name"]}" {duckdb_type(f)}' for f in field.get("fields", []))
        base = f"STRUCT({inner})"
    else:
        base = _TO_DUCKDB.get(kind, "VARCHAR")
    return f"{base}[]" if field.get("mode", "").upper() == "REPEATED" else base


def to_cell(value, field: dict):
    """A value in BigQuery's row encoding: scalars as strings, ARRAY as [{"v": ...}], STRUCT as {"f": [...]}."""
    if value is None:
        return None
    if field.get("mode") == "REPEATED":
        scalar = {**field, "mode": "NULLABLE"}
        return [{"v": to_cell(item, scalar)} for item in value]
    if field["type"] == "RECORD":
        return {"f": [{"v": to_cell(value.get(f["name"]), f)} for f in field["fields"]]}
    return _scalar(value)


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return str(int(value.timestamp() * 1_000_000))
    if isinstance(value, (dt.date, decimal.Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)

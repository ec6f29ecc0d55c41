"""Datasets, tables and queries of the local BigQuery, in one DuckDB database file (so data survives restarts).

A dataset is a DuckDB schema, a table a DuckDB table. Queries in BigQuery's dialect are parsed by sqlglot
(read="bigquery"), their table names reduced to `dataset.table` (the project is dropped), and run as DuckDB SQL.
One lock serialises every use of the connection.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp

from .dialect import FUNCTION_NAMES, LabBigQuery, MLCall, MLFunction, model_options, struct_options
from .model_store import ModelStore
from .types import duckdb_type, field_from_duckdb, to_cell

MIN_BILLED_BYTES = 10 * 1024 * 1024  # BigQuery's on-demand minimum per table read
ML_VIEW_PREFIX = "__labcloud_ml_"  # DuckDB names under which ML.* results are read by the query around them
_WIDTH = {"INTEGER": 8, "FLOAT": 8, "BOOLEAN": 1, "TIMESTAMP": 8, "DATE": 8, "NUMERIC": 16, "STRING": 16}


class BigQueryError(Exception):
    """An error with BigQuery's HTTP status, reason and message."""

    def __init__(self, status: int, message: str, reason: str):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


@dataclass
class Statement:
    """A planned statement: the DuckDB SQL to run (for CREATE MODEL, its training query), the tables it reads,
    BigQuery's statementType, and the BigQuery ML work around it."""

    kind: str
    sql: str | None = None
    read: list[tuple[str, str]] = field(default_factory=list)
    ml_calls: list[MLCall] = field(default_factory=list)
    model: tuple[str, str] | None = None
    model_options: dict = field(default_factory=dict)
    replace: bool = False
    if_not_exists: bool = False
    if_exists: bool = False


class Engine:
    def __init__(self, path: Path, project: str):
        self.project = project
        self.lock = threading.RLock()
        self.db = duckdb.connect(str(path))
        self.models = ModelStore(path.parent / "models", project, BigQueryError)

    # datasets -----------------------------------------------------------------------------------------------
    def datasets(self) -> list[str]:
        with self.lock:
            rows = self.db.execute(
                "SELECT schema_name FROM information_schema.schemata WHERE catalog_name = current_database() "
                "AND schema_name NOT IN ('main', 'information_schema', 'pg_catalog') ORDER BY 1"
            ).fetchall()
        return [row[0] for row in rows]

    def create_dataset(self, dataset: str) -> None:
        if dataset in self.datasets():
            raise BigQueryError(409, f"Already Exists: Dataset {self.project}:{dataset}", "duplicate")
        with self.lock:
            self.db.execute(f"CREATE SCHEMA {_quote(dataset)}")

    def require_dataset(self, dataset: str) -> None:
        if dataset not in self.datasets():
            raise BigQueryError(404, f"Not found: Dataset {self.project}:{dataset}", "notFound")

    def delete_dataset(self, dataset: str, contents: bool) -> None:
        self.require_dataset(dataset)
        if (self.tables(dataset) or self.models.names(dataset)) and not contents:
            raise BigQueryError(400, f"Dataset {self.project}:{dataset} is still in use", "resourceInUse")
        with self.lock:
            self.db.execute(f"DROP SCHEMA {_quote(dataset)} CASCADE")
        self.models.delete_dataset(dataset)

    # tables -------------------------------------------------------------------------------------------------
    def tables(self, dataset: str) -> list[str]:
        with self.lock:
            rows = self.db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
                "AND table_catalog = current_database() ORDER BY 1",
                [dataset],
            ).fetchall()
        return [row[0] for row in rows]

    def require_table(self, dataset: str, table: str) -> None:
        if table not in self.tables(dataset):
            raise BigQueryError(
                404, f"Not found: Table {self.project}:{dataset}.{table} was not found in location US", "notFound"
            )

    def create_table(self, dataset: str, table: str, fields: list[dict]) -> None:
        self.require_dataset(dataset)
        if table in self.tables(dataset):
            raise BigQueryError(409, f"Already Exists: Table {self.project}:{dataset}.{table}", "duplicate")
        columns = ", ".join(f"{_quote(f['name'])} {duckdb_type(f)}" for f in fields) or '"_placeholder" BOOLEAN'
        with self.lock:
            self.db.execute(f"CREATE TABLE {_name(dataset, table)} ({columns})")

    def delete_table(self, dataset: str, table: str) -> None:
        self.require_table(dataset, table)
        with self.lock:
            self.db.execute(f"DROP TABLE {_name(dataset, table)}")

    def schema(self, dataset: str, table: str) -> list[dict]:
        self.require_table(dataset, table)
        with self.lock:
            relation = self.db.table(f"{_quote(dataset)}.{_quote(table)}")
            return [field_from_duckdb(n, t) for n, t in zip(relation.columns, relation.types, strict=False)]

    def num_rows(self, dataset: str, table: str) -> int:
        with self.lock:
            return self.db.execute(f"SELECT count(*) FROM {_name(dataset, table)}").fetchone()[0]

    def insert_rows(self, dataset: str, table: str, rows: list[dict]) -> None:
        fields = self.schema(dataset, table)
        names = [f["name"] for f in fields]
        values = [[row.get(n) for n in names] for row in rows]
        if not values:
            return
        marks = ", ".join("?" for _ in names)
        with self.lock:
            self.db.executemany(f"INSERT INTO {_name(dataset, table)} VALUES ({marks})", values)

    def rows(self, dataset: str, table: str, start: int, limit: int) -> tuple[list[dict], list[dict], int]:
        fields = self.schema(dataset, table)
        with self.lock:
            found = self.db.execute(f"SELECT * FROM {_name(dataset, table)} LIMIT {limit} OFFSET {start}").fetchall()
        return fields, [encode_row(row, fields) for row in found], self.num_rows(dataset, table)

    # queries ------------------------------------------------------------------------------------------------
    def translate(self, sql: str, default_dataset: str | None = None) -> Statement:
        """A BigQuery statement parsed and planned: DuckDB SQL, the tables it reads, its type, its ML work."""
        tree = _parse(sql)
        statement = Statement(kind=statement_type(tree))
        if isinstance(tree, (exp.Create, exp.Drop)) and str(tree.args.get("kind", "")).upper() == "MODEL":
            target = tree.this if isinstance(tree, exp.Create) else tree.args["tables"][0]
            statement.model = _model_reference(target, default_dataset)
            if isinstance(tree, exp.Create):
                statement.model_options = _options(tree)
                statement.replace, statement.if_not_exists = (
                    bool(tree.args.get("replace")),
                    bool(tree.args.get("exists")),
                )
                query = tree.expression.this if isinstance(tree.expression, exp.Subquery) else tree.expression
                statement.sql = self._duckdb_sql(query, default_dataset, statement)
            else:
                statement.if_exists = bool(tree.args.get("exists"))
            return statement
        for table in reversed(list(tree.find_all(exp.Table))):  # innermost ML calls first: outer ones read them
            if isinstance(table.this, (MLFunction, exp.Predict)):
                self._plan_ml_call(table, default_dataset, statement)
        statement.sql = self._duckdb_sql(tree, default_dataset, statement)
        return statement

    def _plan_ml_call(self, table: exp.Table, default_dataset: str | None, statement: Statement) -> None:
        """Replace `ML.FN(MODEL m, input, STRUCT(...))` in the tree by a view that run() fills before the query."""
        function = table.this
        source = function.args.get("expression")
        input_sql = None
        if source is not None:
            query = source.this if isinstance(source, exp.Subquery) else exp.select("*").from_(source.copy())
            input_sql = self._duckdb_sql(query, default_dataset, statement)
        view = f"{ML_VIEW_PREFIX}{len(statement.ml_calls)}"
        statement.ml_calls.append(
            MLCall(
                view=view,
                function=FUNCTION_NAMES[type(function)],
                model=_model_reference(function.this, default_dataset),
                input_sql=input_sql,
                options=_struct_options(function.args.get("params_struct")),
            )
        )
        table.replace(exp.Table(this=exp.to_identifier(view, quoted=True), alias=table.args.get("alias")))

    def _duckdb_sql(self, tree: exp.Expression, default_dataset: str | None, statement: Statement) -> str:
        """Qualify the tree's tables as `dataset.table` (the project dropped) and write it as DuckDB SQL."""
        ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
        for table in tree.find_all(exp.Table):
            if not table.name or (not table.db and (table.name in ctes or table.name.startswith(ML_VIEW_PREFIX))):
                continue
            dataset = table.db or default_dataset
            if not dataset:
                raise BigQueryError(
                    400, f'Table "{table.name}" must be qualified with a dataset (e.g. dataset.table).', "invalid"
                )
            table.set("catalog", None)
            table.set("db", exp.to_identifier(dataset, quoted=True))
            table.set("this", exp.to_identifier(table.name, quoted=True))
            statement.read.append((dataset, table.name))
        return _bigquery_numbers(tree).sql(dialect="duckdb")

    def bytes_read(self, read: list[tuple[str, str]]) -> int:
        """BigQuery's on-demand estimate: rows × column widths per table, at least 10 MB for each table read."""
        total = 0
        for dataset, table in dict.fromkeys(read):
            fields = self.schema(dataset, table)
            width = sum(_WIDTH.get(f["type"], 16) * (4 if f.get("mode") == "REPEATED" else 1) for f in fields)
            total += max(MIN_BILLED_BYTES, self.num_rows(dataset, table) * width)
        return total

    def load(self, dataset, table, paths, source_format, skip_rows, write_disposition, fields) -> int:
        """Append (or replace, WRITE_TRUNCATE) a table's rows from CSV, newline-delimited JSON or Parquet files; the
        number of rows read. CSV and JSON columns take the job's schema, else the existing table's, else DuckDB's
        detection (BigQuery's `autodetect`)."""
        self.require_dataset(dataset)
        exists = table in self.tables(dataset)
        if fields and not exists:
            self.create_table(dataset, table, fields)
            exists = True
        columns = fields or (self.schema(dataset, table) if exists else None)
        source = _load_source(paths, source_format, skip_rows, columns)
        with self.lock:
            try:
                count = self.db.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
                if exists and write_disposition == "WRITE_TRUNCATE":
                    self.db.execute(f"DELETE FROM {_name(dataset, table)}")
                if exists:
                    self.db.execute(f"INSERT INTO {_name(dataset, table)} BY NAME SELECT * FROM {source}")
                else:
                    self.db.execute(f"CREATE TABLE {_name(dataset, table)} AS SELECT * FROM {source}")
            except duckdb.Error as error:
                raise BigQueryError(400, f"Error while reading data: {_first_line(error)}", "invalid") from None
        return count

    def run(self, statement: Statement, params: list | dict | None):
        """Execute a planned query; (fields, rows as tuples), or (None, []) for a statement without a result."""
        for dataset in {d for d, _ in statement.read}:
            self.require_dataset(dataset)
        with self.lock:
            views = [self._compute_ml_call(call) for call in statement.ml_calls]
            try:
                cursor = self.db.execute(statement.sql, params or None)
                if cursor.description is None:
                    return None, []
                names = [d[0] for d in cursor.description]
                relation_types = [d[1] for d in cursor.description]
                found = cursor.fetchall()
            except duckdb.CatalogException as error:
                raise _not_found(error, self.project, statement.read) from None
            except duckdb.Error as error:
                raise BigQueryError(400, f"{_first_line(error)} at [1:1]", "invalidQuery") from None
            finally:
                for view in views:
                    self.db.unregister(view)
        return [field_from_duckdb(n, t) for n, t in zip(names, relation_types, strict=False)], found

    def frame(self, sql: str):
        """The rows of a DuckDB query as a pandas DataFrame (for BigQuery ML's inputs)."""
        with self.lock:
            try:
                return self.db.execute(sql).fetchdf()
            except duckdb.CatalogException as error:
                raise _not_found(error, self.project, []) from None
            except duckdb.Error as error:
                raise BigQueryError(400, f"{_first_line(error)} at [1:1]", "invalidQuery") from None

    # BigQuery ML --------------------------------------------------------------------------------------------
    def create_model(self, statement: Statement) -> None:
        dataset, name = statement.model
        self.require_dataset(dataset)
        if self.models.exists(dataset, name) and not statement.replace:
            if statement.if_not_exists:
                return
            raise BigQueryError(409, f"Already Exists: Model {self.project}:{dataset}.{name}", "duplicate")
        from . import ml  # scikit-learn: imported when a model is first trained, not when the local cloud starts

        frame = self.frame(statement.sql)
        try:
            model = ml.train(frame, statement.model_options)
        except ml.ModelError as error:
            raise BigQueryError(400, str(error), "invalidQuery") from None
        self.models.save(dataset, name, model)

    def drop_model(self, statement: Statement) -> None:
        dataset, name = statement.model
        if not self.models.exists(dataset, name):
            if statement.if_exists:
                return
            raise self.models.not_found(dataset, name)
        self.models.delete(dataset, name)

    def _compute_ml_call(self, call: MLCall) -> str:
        """Run an ML function over its input rows and register its result under the call's view name."""
        from . import ml

        model = self.models.load(*call.model)
        frame = self.frame(call.input_sql) if call.input_sql else None
        try:
            result = ml.apply(model, call.function, frame, call.options)
        except ml.ModelError as error:
            raise BigQueryError(400, f"ML.{call.function}: {error}", "invalidQuery") from None
        self.db.register(call.view, result)
        return call.view


def _load_source(paths: list[str], source_format: str, skip_rows: int, fields: list[dict] | None) -> str:
    """The DuckDB table function that reads a load job's files in its sourceFormat."""
    files = "[" + ", ".join(_literal(p) for p in paths) + "]"
    kind = source_format.upper()
    if kind == "PARQUET":
        return f"read_parquet({files})"
    # With a schema, values are read as its types and by its column order (a CSV without a header row).
    columns = (
        ", columns={" + ", ".join(f"{_literal(f['name'])}: {_literal(duckdb_type(f))}" for f in fields) + "}"
        if fields
        else ""
    )
    if kind == "NEWLINE_DELIMITED_JSON":
        return f"read_json({files}, format='newline_delimited'{columns})"
    if kind != "CSV":
        raise BigQueryError(400, f"The local cloud does not load sourceFormat {source_format}.", "invalid")
    return f"read_csv({files}, header={'true' if skip_rows else 'false'}, skip={max(skip_rows - 1, 0)}{columns})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _parse(sql: str) -> exp.Expression:
    """One statement in BigQuery's dialect (with BigQuery ML), or BigQuery's syntax error with its location."""
    try:
        statements = sqlglot.parse(sql, read=LabBigQuery)
    except sqlglot.errors.ParseError as error:
        detail = error.errors[0] if error.errors else {}
        where = f" at [{detail.get('line', 1)}:{detail.get('col', 1)}]"
        raise BigQueryError(400, f"Syntax error: {detail.get('description', error)}{where}", "invalidQuery") from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise BigQueryError(400, "Syntax error: expected exactly one statement at [1:1]", "invalidQuery")
    return statements[0]


def _model_reference(table: exp.Table, default_dataset: str | None) -> tuple[str, str]:
    dataset = table.db or default_dataset
    if not dataset:
        raise BigQueryError(
            400, f'Model "{table.name}" must be qualified with a dataset (e.g. dataset.model).', "invalid"
        )
    return dataset, table.name


def _options(create: exp.Create) -> dict:
    try:
        return model_options(create)
    except ValueError as error:
        raise BigQueryError(400, str(error), "invalidQuery") from None


def _struct_options(node) -> dict:
    try:
        return struct_options(node)
    except ValueError as error:
        raise BigQueryError(400, str(error), "invalidQuery") from None


def _bigquery_numbers(tree: exp.Expression) -> exp.Expression:
    """BigQuery's number semantics in DuckDB: `1.5` is FLOAT64 (DuckDB would make it DECIMAL), NUMERIC is
    DECIMAL(38, 9) (DuckDB's bare DECIMAL keeps 3 digits)."""
    for literal in list(tree.find_all(exp.Literal)):
        if literal.is_number and any(c in literal.this.lower() for c in ".e"):
            literal.replace(exp.cast(literal.copy(), exp.DataType.Type.DOUBLE))
    for kind in tree.find_all(exp.DataType):
        if kind.this == exp.DataType.Type.DECIMAL and not kind.expressions:
            kind.set(
                "expressions",
                [exp.DataTypeParam(this=exp.Literal.number(38)), exp.DataTypeParam(this=exp.Literal.number(9))],
            )
    return tree


def statement_type(tree: exp.Expression) -> str:
    """BigQuery's statementType (SELECT, INSERT, DELETE, UPDATE, CREATE_TABLE_AS_SELECT, ...) of a parsed statement."""
    if isinstance(tree, exp.Create):
        kind = str(tree.args.get("kind") or "TABLE").upper()
        if kind == "MODEL":
            return "CREATE_MODEL"
        return f"CREATE_{kind}_AS_SELECT" if tree.expression is not None and kind == "TABLE" else f"CREATE_{kind}"
    if isinstance(tree, exp.Drop):
        return f"DROP_{str(tree.args.get('kind') or 'TABLE').upper()}"
    return {exp.Insert: "INSERT", exp.Delete: "DELETE", exp.Update: "UPDATE", exp.Merge: "MERGE"}.get(
        type(tree), "SELECT"
    )


def encode_row(row, fields: list[dict]) -> dict:
    return {"f": [{"v": to_cell(value, field)} for value, field in zip(row, fields, strict=False)]}


def _not_found(error: Exception, project: str, read) -> BigQueryError:
    match = re.search(r'Table with name "?([^"\s]+)"? does not exist', str(error))
    if match:
        table = match.group(1)
        dataset = next((d for d, t in read if t == table), "")
        return BigQueryError(
            404, f"Not found: Table {project}:{dataset}.{table} was not found in location US", "notFound"
        )
    return BigQueryError(400, f"{_first_line(error)} at [1:1]", "invalidQuery")


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _name(dataset: str, table: str) -> str:
    return f"{_quote(dataset)}.{_quote(table)}"

"""BigQuery's SQL dialect as sqlglot parses it, plus the BigQuery ML table functions sqlglot does not know.

sqlglot parses `CREATE MODEL ... OPTIONS(...) AS SELECT` and `ML.PREDICT(MODEL m, (SELECT ...), STRUCT(...))`
already; `ML.EVALUATE`, `ML.ROC_CURVE`, `ML.CONFUSION_MATRIX`, `ML.FEATURE_IMPORTANCE` and `ML.TRAINING_INFO`
are added here with the same argument grammar (MODEL name[, TABLE t | (query)][, STRUCT(...)]), so every ML
statement is read by a real parser into a tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.dialects.bigquery import BigQuery
from sqlglot.tokens import TokenType


class MLFunction(exp.Expression, exp.Func):
    """An ML.* table function: `this` is the model, `expression` the input (table or query), then the options."""

    arg_types = {"this": True, "expression": False, "params_struct": False}


class MLEvaluate(MLFunction):
    pass


class MLRocCurve(MLFunction):
    pass


class MLConfusionMatrix(MLFunction):
    pass


class MLFeatureImportance(MLFunction):
    pass


class MLTrainingInfo(MLFunction):
    pass


_ADDED = {
    "EVALUATE": MLEvaluate,
    "ROC_CURVE": MLRocCurve,
    "CONFUSION_MATRIX": MLConfusionMatrix,
    "FEATURE_IMPORTANCE": MLFeatureImportance,
    "TRAINING_INFO": MLTrainingInfo,
}
FUNCTION_NAMES = {exp.Predict: "PREDICT", **{kind: name for name, kind in _ADDED.items()}}


def _parser_of(kind: type[exp.Expression]):
    return lambda parser: parser._parse_ml_function(kind)


class LabBigQuery(BigQuery):
    class Parser(BigQuery.Parser):
        FUNCTION_PARSERS = {
            **BigQuery.Parser.FUNCTION_PARSERS,
            **{name: _parser_of(kind) for name, kind in {"PREDICT": exp.Predict, **_ADDED}.items()},
        }

        def _parse_ml_function(self, kind: type[exp.Expression]) -> exp.Expression:
            """ML.PREDICT's grammar, MODEL m[, TABLE t | (query)][, STRUCT(...)], where the input may be left out
            (then the model's own evaluation data is used)."""
            if not self._match_text_seq("MODEL"):
                self.raise_error("Expected MODEL and the model's name as the first argument")
            model = self._parse_table()
            if not self._match(TokenType.COMMA):
                return self.expression(kind(this=model))
            self._match_text_seq("TABLE")
            source = None if self._match(TokenType.STRUCT, advance=False) else self._parse_table()
            self._match(TokenType.COMMA)
            return self.expression(kind(this=model, expression=source, params_struct=self._parse_bitwise()))


@dataclass
class MLCall:
    """One ML.* table function of a query, to be computed before the query runs and read under `view`."""

    view: str
    function: str
    model: tuple[str, str]  # (dataset, model)
    input_sql: str | None  # DuckDB SQL of the input rows, or None (the model's evaluation data)
    options: dict = field(default_factory=dict)


def literal_value(node: exp.Expression):
    """The Python value of an OPTIONS or STRUCT literal: strings, numbers, booleans, NULL, arrays of them."""
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        number = float(node.this)
        return int(number) if number.is_integer() and "." not in node.this else number
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Array):
        return [literal_value(item) for item in node.expressions]
    if isinstance(node, exp.Neg):
        return -literal_value(node.this)
    if isinstance(node, (exp.Column, exp.Var, exp.Identifier)):
        return node.name  # e.g. model_type=logistic_reg unquoted
    raise ValueError(f"Unsupported option value: {node.sql(dialect='bigquery')}")


def struct_options(node: exp.Expression | None) -> dict:
    """`STRUCT(0.3 AS threshold)` as {"threshold": 0.3}."""
    if node is None:
        return {}
    options = {}
    for item in getattr(node, "expressions", []):
        if isinstance(item, (exp.PropertyEQ, exp.Alias)):
            name = item.this.name if isinstance(item, exp.PropertyEQ) else item.alias
            value = item.expression if isinstance(item, exp.PropertyEQ) else item.this
            options[name.lower()] = literal_value(value)
    return options


def model_options(create: exp.Create) -> dict:
    """The OPTIONS(...) of a CREATE MODEL, names lower-cased."""
    properties = create.args.get("properties")
    options = {}
    for prop in properties.expressions if properties else []:
        if isinstance(prop, exp.Property):
            options[prop.name.lower()] = literal_value(prop.args["value"])
        elif isinstance(prop, exp.TransformModelProperty):
            raise ValueError("TRANSFORM clauses are not supported by the local BigQuery ML")
    return options

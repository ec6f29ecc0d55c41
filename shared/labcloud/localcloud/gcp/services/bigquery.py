"""BigQuery's REST API v2, as google-cloud-bigquery speaks it when `BIGQUERY_EMULATOR_HOST` points here.

Datasets, tables, `tabledata.insertAll`/`list`, jobs (query, load through `/upload/bigquery/v2/.../jobs` as
multipart or resumable uploads, or from `gs://` objects of the local Cloud Storage) and `jobs.query` /
`jobs.getQueryResults` with paging. The SQL is BigQuery's dialect translated by sqlglot and executed by DuckDB
(`bigquery/engine.py`). Queries are metered by the bytes they would scan (10 MB minimum per table read).

A query's result is, as on BigQuery, an anonymous table (`job.destination`: table `anon<id>` in the project's
hidden dataset `_<hex>`) that `tables.get` and `tabledata.list` read. Unlike BigQuery's (kept 24 hours, and
queryable in SQL), these are kept in memory until the local cloud stops, and SQL cannot read them; hidden
datasets are left out of `datasets.list` unless it asks for `all`, as on BigQuery.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

from ....pricing.catalog import load_service_prices
from .. import storage_store
from ..bigquery.engine import BigQueryError, Engine, encode_row
from ..bigquery.model_store import REST_MODEL_TYPES
from ..gateway import GcpRequest, GoogleError, Response, json_response

_BASE = r"/bigquery/v2/projects/(?P<project>[^/]+)"
_DATASET = _BASE + r"/datasets/(?P<dataset>[^/]+)"
_TABLE = _DATASET + r"/tables/(?P<table>[^/]+)"
_JOB = _BASE + r"/jobs/(?P<job>[^/]+)"
_MODEL = _DATASET + r"/models/(?P<model>[^/]+)"
PAGE_ROWS = 10_000  # rows per page when the client names no maxResults
TIB = 1024**4
ANONYMOUS_TABLE_HOURS = 24  # BigQuery keeps a query's anonymous result table this long


def register(gateway, context) -> None:
    api = BigQueryApi(context)
    for method, pattern, handler in (
        ("GET", _BASE + "/datasets", api.list_datasets),
        ("POST", _BASE + "/datasets", api.create_dataset),
        ("GET", _DATASET, api.get_dataset),
        ("PATCH", _DATASET, api.get_dataset),
        ("DELETE", _DATASET, api.delete_dataset),
        ("GET", _DATASET + "/tables", api.list_tables),
        ("POST", _DATASET + "/tables", api.create_table),
        ("GET", _TABLE, api.get_table),
        ("PATCH", _TABLE, api.get_table),
        ("DELETE", _TABLE, api.delete_table),
        ("POST", _TABLE + "/insertAll", api.insert_all),
        ("GET", _TABLE + "/data", api.list_data),
        ("GET", _DATASET + "/models", api.list_models),
        ("GET", _MODEL, api.get_model),
        ("DELETE", _MODEL, api.delete_model),
        ("POST", _BASE + "/jobs", api.insert_job),
        ("POST", r"/upload" + _BASE + "/jobs", api.upload_job),
        ("PUT", r"/upload" + _BASE + "/jobs", api.upload_job),
        ("GET", _JOB, api.get_job),
        ("POST", _BASE + "/queries", api.query),
        ("GET", _BASE + r"/queries/(?P<job>[^/]+)", api.query_results),
    ):
        gateway.route(method, pattern, _translating(handler))


def _translating(handler):
    """Engine errors become BigQuery's error bodies."""

    def handle(request: GcpRequest) -> Response:
        try:
            return handler(request)
        except BigQueryError as error:
            raise GoogleError(error.status, error.message, error.reason) from None

    return handle


class BigQueryApi:
    def __init__(self, context):
        self.context = context
        folder = context.records("bigquery")
        self.engine = Engine(folder / "bigquery.duckdb", context.project)
        self.jobs: dict[str, dict] = {}
        self.results: dict[str, tuple[list[dict], list]] = {}
        self.uploads: dict[str, dict] = {}
        self.failures: dict[str, BigQueryError] = {}  # job id -> the error of a query job that failed
        self.anonymous: dict[str, str] = {}  # anonymous result table -> the job whose result it holds
        self.lock = threading.Lock()

    # datasets -----------------------------------------------------------------------------------------------
    def dataset_resource(self, project: str, dataset: str) -> dict:
        return {
            "kind": "bigquery#dataset",
            "id": f"{project}:{dataset}",
            "datasetReference": {"projectId": project, "datasetId": dataset},
            "location": "US",
        }

    def list_datasets(self, request: GcpRequest) -> Response:
        project = request.params["project"]
        every = request.query.get("all", "false").lower() == "true"
        names = [d for d in self.engine.datasets() if every or not d.startswith("_")]
        if every and self.anonymous:
            names.append(anonymous_dataset(project))
        items = [self.dataset_resource(project, d) for d in names]
        return json_response({"kind": "bigquery#datasetList", "datasets": items})

    def create_dataset(self, request: GcpRequest) -> Response:
        reference = request.json().get("datasetReference", {})
        dataset = reference.get("datasetId", "")
        if not dataset.replace("_", "").isalnum():
            raise GoogleError(400, f'Invalid dataset ID "{dataset}".', "invalid")
        self.engine.create_dataset(dataset)
        return json_response(self.dataset_resource(request.params["project"], dataset))

    def get_dataset(self, request: GcpRequest) -> Response:
        if request.params["dataset"] != anonymous_dataset(request.params["project"]):
            self.engine.require_dataset(request.params["dataset"])
        return json_response(self.dataset_resource(request.params["project"], request.params["dataset"]))

    def delete_dataset(self, request: GcpRequest) -> Response:
        contents = request.query.get("deleteContents", "false").lower() == "true"
        self.engine.delete_dataset(request.params["dataset"], contents)
        return 204, [], b""

    # tables -------------------------------------------------------------------------------------------------
    def table_resource(self, project: str, dataset: str, table: str, full: bool = True) -> dict:
        resource = {
            "kind": "bigquery#table",
            "id": f"{project}:{dataset}.{table}",
            "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
            "type": "TABLE",
            "location": "US",
        }
        if full:
            fields = self.engine.schema(dataset, table)
            rows = self.engine.num_rows(dataset, table)
            resource.update(
                schema={"fields": fields}, numRows=str(rows), numBytes=str(self.engine.bytes_read([(dataset, table)]))
            )
        return resource

    def anonymous_result(self, project: str, table: str) -> tuple[list[dict], list]:
        """The fields and rows of a query's anonymous result table; BigQuery's 404 when there is none."""
        job_id = self.anonymous.get(table)
        if job_id is None or job_id not in self.results:
            raise GoogleError(
                404,
                f"Not found: Table {project}:{anonymous_dataset(project)}.{table} was not found in location US",
                "notFound",
            )
        return self.results[job_id]

    def anonymous_table_resource(self, project: str, table: str) -> dict:
        fields, rows = self.anonymous_result(project, table)
        created = int(self.jobs[self.anonymous[table]]["statistics"]["creationTime"])
        resource = self.table_resource(project, anonymous_dataset(project), table, full=False)
        resource.update(
            schema={"fields": fields},
            numRows=str(len(rows)),
            creationTime=str(created),
            expirationTime=str(created + ANONYMOUS_TABLE_HOURS * 3600 * 1000),
        )
        return resource

    def list_tables(self, request: GcpRequest) -> Response:
        project, dataset = request.params["project"], request.params["dataset"]
        self.engine.require_dataset(dataset)
        items = [self.table_resource(project, dataset, t, full=False) for t in self.engine.tables(dataset)]
        return json_response({"kind": "bigquery#tableList", "tables": items, "totalItems": len(items)})

    def create_table(self, request: GcpRequest) -> Response:
        body = request.json()
        dataset, table = request.params["dataset"], body.get("tableReference", {}).get("tableId", "")
        self.engine.create_table(dataset, table, body.get("schema", {}).get("fields", []))
        return json_response(self.table_resource(request.params["project"], dataset, table))

    def get_table(self, request: GcpRequest) -> Response:
        p = request.params
        if p["dataset"] == anonymous_dataset(p["project"]):
            return json_response(self.anonymous_table_resource(p["project"], p["table"]))
        return json_response(self.table_resource(p["project"], p["dataset"], p["table"]))

    def delete_table(self, request: GcpRequest) -> Response:
        p = request.params
        if p["dataset"] == anonymous_dataset(p["project"]):
            self.anonymous_result(p["project"], p["table"])  # 404 when unknown
            self.results.pop(self.anonymous.pop(p["table"]), None)
            return 204, [], b""
        self.engine.delete_table(p["dataset"], p["table"])
        return 204, [], b""

    def insert_all(self, request: GcpRequest) -> Response:
        rows = [item.get("json", {}) for item in request.json().get("rows", [])]
        self.engine.insert_rows(request.params["dataset"], request.params["table"], rows)
        return json_response({"kind": "bigquery#tableDataInsertAllResponse"})

    def list_data(self, request: GcpRequest) -> Response:
        start = int(request.query.get("pageToken") or request.query.get("startIndex") or 0)
        limit = int(request.query.get("maxResults") or PAGE_ROWS)
        p = request.params
        if p["dataset"] == anonymous_dataset(p["project"]):
            fields, found = self.anonymous_result(p["project"], p["table"])
            rows, total = [encode_row(row, fields) for row in found[start : start + limit]], len(found)
        else:
            _, rows, total = self.engine.rows(p["dataset"], p["table"], start, limit)
        body = {"kind": "bigquery#tableDataList", "totalRows": str(total), "rows": rows}
        if start + len(rows) < total:
            body["pageToken"] = str(start + len(rows))
        return json_response(body)

    # models (BigQuery ML) -----------------------------------------------------------------------------------
    def model_resource(self, project: str, dataset: str, name: str) -> dict:
        model = self.engine.models.load(dataset, name)
        created = str(int(model.created * 1000))
        label_type = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}.get(model.label_kind, "STRING")
        resource = {
            "kind": "bigquery#model",
            "modelReference": {"projectId": project, "datasetId": dataset, "modelId": name},
            "modelType": rest_model_type(model.model_type),
            "creationTime": created,
            "lastModifiedTime": created,
            "location": "US",
            "featureColumns": [
                {"name": n, "type": {"typeKind": "FLOAT64" if n in model.features.numeric else "STRING"}}
                for n in model.features.names
            ],
            "trainingRuns": [
                {
                    "trainingOptions": {k: v for k, v in model.options.items() if not isinstance(v, list)},
                    "startTime": storage_store.rfc3339(model.created),
                    "results": [
                        {"index": r["iteration"], "durationMs": str(r["duration_ms"]), "trainingLoss": r["loss"]}
                        for r in model.training_info
                    ],
                }
            ],
        }
        if model.label:
            resource["labelColumns"] = [{"name": f"predicted_{model.label}", "type": {"typeKind": label_type}}]
        return resource

    def list_models(self, request: GcpRequest) -> Response:
        project, dataset = request.params["project"], request.params["dataset"]
        self.engine.require_dataset(dataset)
        items = [self.model_resource(project, dataset, n) for n in self.engine.models.names(dataset)]
        return json_response({"models": items})

    def get_model(self, request: GcpRequest) -> Response:
        p = request.params
        return json_response(self.model_resource(p["project"], p["dataset"], p["model"]))

    def delete_model(self, request: GcpRequest) -> Response:
        dataset, name = request.params["dataset"], request.params["model"]
        self.engine.models.load(dataset, name)  # 404 when unknown
        self.engine.models.delete(dataset, name)
        return 204, [], b""

    # jobs ---------------------------------------------------------------------------------------------------
    def insert_job(self, request: GcpRequest) -> Response:
        return json_response(self.run_job(request.params["project"], request.json()))

    def get_job(self, request: GcpRequest) -> Response:
        return json_response(self.find_job(request.params["job"]))

    def find_job(self, job_id: str) -> dict:
        if job_id not in self.jobs:
            raise GoogleError(404, f"Not found: Job {self.context.project}:US.{job_id}", "notFound")
        return self.jobs[job_id]

    def run_job(self, project: str, body: dict, data_file: Path | None = None) -> dict:
        """Run a job to completion (queries and loads are synchronous here) and record it."""
        reference = {**body.get("jobReference", {}), "projectId": project, "location": "US"}
        reference.setdefault("jobId", f"job_{uuid.uuid4().hex}")
        config = body.get("configuration", {})
        job = {
            "kind": "bigquery#job",
            "id": f"{project}:US.{reference['jobId']}",
            "jobReference": reference,
            "configuration": config,
            "status": {"state": "DONE"},
            "statistics": {"creationTime": str(int(time.time() * 1000))},
        }
        if "query" in config:
            self.query_job_or_error(job, config)
        elif "load" in config:
            self.load_job(job, config["load"], data_file)
        else:
            raise GoogleError(400, "Only query and load jobs are supported by the local cloud.", "invalid")
        if not config.get("dryRun"):
            self.jobs[reference["jobId"]] = job
        return job

    def query_job_or_error(self, job: dict, config: dict) -> None:
        """A query that fails while it runs (not when it is parsed) is a DONE job with an errorResult, as in
        BigQuery: the client raises at `result()` (a 409 here would make it look for a clashing job id)."""
        try:
            self.query_job(job, config)
        except BigQueryError as error:
            if config.get("dryRun") or error.status == 400 and error.message.startswith("Syntax error"):
                raise
            problem = {"reason": error.reason, "message": error.message, "location": "query"}
            job["status"] = {"state": "DONE", "errorResult": problem, "errors": [problem]}
            self.failures[job["jobReference"]["jobId"]] = error

    def query_job(self, job: dict, config: dict) -> None:
        query = config["query"]
        default = (query.get("defaultDataset") or {}).get("datasetId")
        statement = self.engine.translate(query.get("query", ""), default)
        kind, read = statement.kind, statement.read
        reads = [r for r in read if r[1] in self.engine.tables(r[0])] if kind.startswith("CREATE") else read
        billed = self.engine.bytes_read(reads) if reads else 0
        stats = {"totalBytesProcessed": str(billed), "totalBytesBilled": str(billed), "cacheHit": False}
        job["statistics"].update(stats, query={**stats, "statementType": kind})
        if config.get("dryRun"):
            return
        job_id = job["jobReference"]["jobId"]
        if statement.model is not None:
            self.run_model_statement(statement, job)
            self.results[job_id] = ([], [])
            self.meter_query(billed, job_id, training=kind == "CREATE_MODEL")
            return
        fields, rows = self.engine.run(statement, query_parameters(query))
        if kind != "SELECT":
            affected = rows[0][0] if fields and rows and isinstance(rows[0][0], int) else 0
            fields, rows = None, []
            job["statistics"]["query"]["numDmlAffectedRows"] = str(affected)
        self.results[job_id] = (fields or [], rows)
        if fields is not None and "destinationTable" not in query:
            project = job["jobReference"]["projectId"]
            table = f"anon{uuid.uuid4().hex}"
            self.anonymous[table] = job_id
            destination = {"projectId": project, "datasetId": anonymous_dataset(project), "tableId": table}
            query["destinationTable"] = destination
        self.meter_query(billed, job_id)

    def run_model_statement(self, statement, job: dict) -> None:
        """CREATE MODEL trains (synchronously) and records BigQuery's ML statistics; DROP MODEL deletes."""
        dataset, name = statement.model
        job["statistics"]["query"]["ddlTargetTable"] = {
            "projectId": self.context.project,
            "datasetId": dataset,
            "tableId": name,
        }
        if statement.kind != "CREATE_MODEL":
            self.engine.drop_model(statement)
            return
        self.engine.create_model(statement)
        model = self.engine.models.load(dataset, name)
        job["statistics"]["query"]["mlStatistics"] = {
            "modelType": rest_model_type(model.model_type),
            "trainingType": "SINGLE_TRAINING",
            "maxIterations": str(model.options.get("max_iterations", 20)),
            "iterationResults": [
                {"index": row["iteration"], "durationMs": str(row["duration_ms"]), "trainingLoss": row["loss"]}
                for row in model.training_info
            ],
        }

    def meter_query(self, billed: int, job_id: str, training: bool = False) -> None:
        """On-demand queries by TiB scanned; CREATE MODEL by TiB processed at BigQuery ML's rate."""
        key = "gcp.bigquery_ml.create_model_per_tib" if training else "gcp.bigquery.on_demand_per_tib"
        prices = load_service_prices()
        if self.context.ledger is None or key not in prices or not billed:
            return
        self.context.meter(
            service="bigquery",
            action="CREATE MODEL" if training else "query (on-demand)",
            resource=job_id,
            quantity=billed / TIB,
            unit="TiB processed" if training else "TiB scanned",
            usd=billed / TIB * prices[key].usd,
            price_key=key,
        )

    def query(self, request: GcpRequest) -> Response:
        """jobs.query: run a query job and answer its first page of results."""
        body = request.json()
        project = request.params["project"]
        config = {"query": {k: v for k, v in body.items() if k not in ("maxResults", "timeoutMs", "requestId")}}
        config["query"]["useLegacySql"] = False
        job = self.run_job(project, {"configuration": {"query": config["query"]}, "jobReference": {}})
        if body.get("dryRun"):
            return json_response({"kind": "bigquery#queryResponse", "jobComplete": True, **job["statistics"]})
        answer = self.result_page(job["jobReference"]["jobId"], 0, int(body.get("maxResults") or PAGE_ROWS))
        return json_response({**answer, "jobReference": job["jobReference"], "queryId": job["jobReference"]["jobId"]})

    def query_results(self, request: GcpRequest) -> Response:
        job_id = request.params["job"]
        self.find_job(job_id)
        start = int(request.query.get("pageToken") or request.query.get("startIndex") or 0)
        answer = self.result_page(job_id, start, int(request.query.get("maxResults") or PAGE_ROWS))
        return json_response({**answer, "jobReference": self.jobs[job_id]["jobReference"]})

    def result_page(self, job_id: str, start: int, limit: int) -> dict:
        if job_id in self.failures:
            raise self.failures[job_id]
        fields, rows = self.results.get(job_id, ([], []))
        page = [encode_row(row, fields) for row in rows[start : start + limit]]
        stats = self.jobs[job_id]["statistics"]
        answer = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobComplete": True,
            "schema": {"fields": fields},
            "totalRows": str(len(rows)),
            "rows": page,
            "totalBytesProcessed": stats["totalBytesProcessed"],
            "cacheHit": False,
        }
        if start + len(page) < len(rows):
            answer["pageToken"] = str(start + len(page))
        return answer

    # loads --------------------------------------------------------------------------------------------------
    def upload_job(self, request: GcpRequest) -> Response:
        """Load jobs with their data: `uploadType=multipart` in one request, or `resumable` (POST, then PUTs)."""
        kind = request.query.get("uploadType", "")
        project = request.params["project"]
        if kind == "multipart":
            metadata, data = _split_multipart(request)
            return json_response(self.load_from_bytes(project, metadata, data))
        if kind == "resumable" and request.method == "POST":
            upload_id = uuid.uuid4().hex
            self.uploads[upload_id] = {"metadata": request.json(), "data": bytearray()}
            location = f"{_host(request)}/upload/bigquery/v2/projects/{project}/jobs?uploadType=resumable"
            return 200, [("Location", f"{location}&upload_id={upload_id}")], b""
        upload = self.uploads.get(request.query.get("upload_id", ""))
        if upload is None:
            raise GoogleError(404, "No such upload session.", "notFound")
        upload["data"] += request.body()
        content_range = request.environ.get("HTTP_CONTENT_RANGE", "")
        if content_range.endswith("/*"):
            return 308, [("Range", f"bytes=0-{len(upload['data']) - 1}")], b""
        self.uploads.pop(request.query["upload_id"])
        return json_response(self.load_from_bytes(project, upload["metadata"], bytes(upload["data"])))

    def load_from_bytes(self, project: str, metadata: dict, data: bytes) -> dict:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "upload"
            path.write_bytes(data)
            return self.run_job(project, metadata, path)

    def load_job(self, job: dict, load: dict, data_file: Path | None) -> None:
        paths = [data_file] if data_file else [self.gcs_path(uri) for uri in load.get("sourceUris", [])]
        destination = load.get("destinationTable", {})
        rows = self.engine.load(
            destination.get("datasetId", ""),
            destination.get("tableId", ""),
            [str(p) for p in paths],
            source_format=load.get("sourceFormat", "CSV"),
            skip_rows=int(load.get("skipLeadingRows", 0) or 0),
            write_disposition=load.get("writeDisposition", "WRITE_APPEND"),
            fields=(load.get("schema") or {}).get("fields"),
        )
        job["statistics"]["load"] = {"outputRows": str(rows), "inputFiles": str(len(paths))}

    def gcs_path(self, uri: str) -> Path:
        bucket, name = storage_store.parse_gs_url(uri)
        return storage_store.for_context(self.context).object_path(bucket, name)


def anonymous_dataset(project: str) -> str:
    """The hidden dataset that holds a project's anonymous query results (BigQuery names it `_` + 40 hex digits)."""
    return "_" + hashlib.sha1(project.encode()).hexdigest()


def rest_model_type(model_type: str) -> str:
    return REST_MODEL_TYPES.get(model_type, model_type)


def query_parameters(query: dict) -> dict | list | None:
    """Named (@name) or positional (?) parameters as Python values DuckDB binds."""
    parameters = query.get("queryParameters") or []
    values = {p.get("name"): _parameter_value(p) for p in parameters}
    if query.get("parameterMode") == "POSITIONAL" or (parameters and not parameters[0].get("name")):
        return list(values.values()) if len(values) == len(parameters) else [_parameter_value(p) for p in parameters]
    return values or None


def _parameter_value(parameter: dict):
    kind = parameter.get("parameterType", {}).get("type", "STRING")
    value = parameter.get("parameterValue", {})
    if kind == "ARRAY":
        return [_convert(kind_of(parameter), v.get("value")) for v in value.get("arrayValues", [])]
    return _convert(kind, value.get("value"))


def kind_of(parameter: dict) -> str:
    return parameter.get("parameterType", {}).get("arrayType", {}).get("type", "STRING")


def _convert(kind: str, value):
    if value is None:
        return None
    if kind in ("INT64", "INTEGER"):
        return int(value)
    if kind in ("FLOAT64", "FLOAT", "NUMERIC", "BIGNUMERIC"):
        return float(value)
    if kind in ("BOOL", "BOOLEAN"):
        return str(value).lower() == "true"
    return value


def _split_multipart(request: GcpRequest) -> tuple[dict, bytes]:
    """The metadata (JSON) and data parts of a `multipart/related` upload."""
    head = f"Content-Type: {request.content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body())
    parts = list(message.iter_parts())
    if len(parts) != 2:
        raise GoogleError(400, "A multipart upload needs a metadata part and a data part.", "invalid")
    return json.loads(parts[0].get_payload(decode=True)), parts[1].get_payload(decode=True)


def _host(request: GcpRequest) -> str:
    environ = request.environ
    return f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', 'localhost')}"

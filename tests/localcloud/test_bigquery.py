"""BigQuery on the local cloud through the unmodified google-cloud-bigquery client: datasets and tables, loads,
streaming inserts, queries in BigQuery's dialect executed by DuckDB (types, paging, parameters, DDL/DML, dry runs),
and BigQuery's errors — the server survives them."""

import datetime as dt
import decimal
import uuid

import pandas as pd
import pytest
from google.api_core.exceptions import BadRequest, Conflict, NotFound
from google.cloud import bigquery

import labcloud


@pytest.fixture
def client(connection):
    """A BigQuery client wired to the session's local cloud, as a notebook gets one; the environment is restored."""
    return bigquery.Client()


@pytest.fixture
def dataset(client):
    name = f"ds_{uuid.uuid4().hex[:8]}"
    client.create_dataset(name)
    yield name
    client.delete_dataset(name, delete_contents=True, not_found_ok=True)


def test_dataset_and_table_lifecycle(client):
    name = f"life_{uuid.uuid4().hex[:8]}"
    client.create_dataset(name)
    client.create_dataset(name, exists_ok=True)
    with pytest.raises(Conflict):
        client.create_dataset(name)
    assert name in [d.dataset_id for d in client.list_datasets()]
    assert client.get_dataset(name).dataset_id == name
    schema = [bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("name", "STRING")]
    client.create_table(bigquery.Table(f"{client.project}.{name}.people", schema=schema))
    table = client.get_table(f"{name}.people")
    assert [(f.name, f.field_type) for f in table.schema] == [("id", "INTEGER"), ("name", "STRING")]
    assert table.num_rows == 0
    assert client.insert_rows_json(f"{name}.people", [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]) == []
    assert client.insert_rows(table, [(3, "c")]) == []
    assert client.get_table(f"{name}.people").num_rows == 3
    assert sorted(r["name"] for r in client.list_rows(f"{name}.people")) == ["a", "b", "c"]
    assert [t.table_id for t in client.list_tables(name)] == ["people"]
    client.delete_table(f"{name}.people")
    assert list(client.list_tables(name)) == []
    client.delete_dataset(name, delete_contents=True)
    with pytest.raises(NotFound):
        client.get_dataset(name)


def test_load_from_dataframe_then_query_to_dataframe(client, dataset):
    frame = pd.DataFrame({"x": range(100), "y": [i * 0.5 for i in range(100)], "g": ["a", "b"] * 50})
    client.load_table_from_dataframe(frame, f"{dataset}.points").result()
    assert client.get_table(f"{dataset}.points").num_rows == 100
    result = client.query(f"SELECT g, SUM(y) AS total FROM `{client.project}.{dataset}.points` GROUP BY g ORDER BY g")
    out = result.to_dataframe()
    assert out["g"].tolist() == ["a", "b"]
    assert out["total"].tolist() == [frame[frame.g == "a"].y.sum(), frame[frame.g == "b"].y.sum()]
    assert int(result.total_bytes_processed) >= 10 * 1024 * 1024  # BigQuery's minimum per table read


def test_types_round_trip(client):
    sql = """SELECT 42 AS i, 1.5 AS f, TRUE AS b, 'hé' AS s, TIMESTAMP '2024-03-01 12:30:00+00' AS ts,
        DATE '2024-03-01' AS d, NUMERIC '12.25' AS n, [1, 2, 3] AS arr, STRUCT(7 AS a, 'x' AS c) AS st"""
    job = client.query(sql)
    rows = list(job.result())
    types = {f.name: (f.field_type, f.mode) for f in job.result().schema}
    assert types["i"] == ("INTEGER", "NULLABLE") and types["f"][0] == "FLOAT" and types["b"][0] == "BOOLEAN"
    assert types["ts"][0] == "TIMESTAMP" and types["d"][0] == "DATE" and types["n"][0] == "NUMERIC"
    assert types["arr"] == ("INTEGER", "REPEATED") and types["st"][0] == "RECORD"
    row = rows[0]
    assert (row["i"], row["f"], row["b"], row["s"]) == (42, 1.5, True, "hé")
    assert row["ts"] == dt.datetime(2024, 3, 1, 12, 30, tzinfo=dt.timezone.utc)
    assert row["d"] == dt.date(2024, 3, 1) and row["n"] == decimal.Decimal("12.25")
    assert row["arr"] == [1, 2, 3] and row["st"] == {"a": 7, "c": "x"}
    frame = client.query(sql).to_dataframe()
    assert frame.loc[0, "i"] == 42 and frame.loc[0, "d"] == dt.date(2024, 3, 1)
    assert list(frame.loc[0, "arr"]) == [1, 2, 3]


def test_paging_parameters_dml_and_dry_run(client, dataset):
    client.query(f"CREATE TABLE {dataset}.nums AS SELECT * FROM UNNEST(GENERATE_ARRAY(1, 2500)) AS n").result()
    job = client.query(f"SELECT n FROM {dataset}.nums ORDER BY n")
    values = [row["n"] for row in job.result(page_size=1000)]
    assert values == list(range(1, 2501))
    params = [bigquery.ScalarQueryParameter("low", "INT64", 2490), bigquery.ScalarQueryParameter("tag", "STRING", "t")]
    config = bigquery.QueryJobConfig(query_parameters=params)
    rows = client.query(f"SELECT n, @tag AS tag FROM {dataset}.nums WHERE n > @low ORDER BY n", job_config=config)
    assert [(r["n"], r["tag"]) for r in rows.result()] == [(n, "t") for n in range(2491, 2501)]
    deleted = client.query(f"DELETE FROM {dataset}.nums WHERE n > 2000")
    deleted.result()
    assert deleted.num_dml_affected_rows == 500 and deleted.statement_type == "DELETE"
    client.query(f"INSERT INTO {dataset}.nums (n) VALUES (-1)").result()
    assert client.get_table(f"{dataset}.nums").num_rows == 2001
    dry = client.query(f"SELECT n FROM {dataset}.nums", job_config=bigquery.QueryJobConfig(dry_run=True))
    assert dry.total_bytes_processed >= 10 * 1024 * 1024


def test_errors_are_bigquerys_and_the_server_survives(client, dataset):
    with pytest.raises(BadRequest) as bad:
        client.query("SELEC 1").result()
    assert "Syntax error" in bad.value.message and "at [1:" in bad.value.message
    assert bad.value.errors[0]["reason"] == "invalidQuery"
    with pytest.raises(NotFound) as missing:
        client.query(f"SELECT * FROM {dataset}.nowhere").result()
    assert f"{dataset}.nowhere was not found in location US" in missing.value.message
    with pytest.raises(NotFound):
        client.get_table(f"{dataset}.nowhere")
    assert [r[0] for r in client.query("SELECT 1 + 1").result()] == [2]


def test_load_from_cloud_storage_csv(client, dataset):
    from google.cloud import storage

    bucket = storage.Client().create_bucket(f"bq-{uuid.uuid4().hex[:8]}")
    bucket.blob("in/people.csv").upload_from_string("id,name\n1,a\n2,b\n", content_type="text/csv")
    config = bigquery.LoadJobConfig(source_format="CSV", skip_leading_rows=1, autodetect=True)
    job = client.load_table_from_uri(f"gs://{bucket.name}/in/people.csv", f"{dataset}.people", job_config=config)
    job.result()
    assert job.output_rows == 2
    rows = client.query(f"SELECT id, name FROM {dataset}.people ORDER BY id").result()
    assert [(r["id"], r["name"]) for r in rows] == [(1, "a"), (2, "b")]


def test_load_from_cloud_storage_parquet(client, dataset):
    from google.cloud import storage

    frame = pd.DataFrame({"id": [1, 2, 3], "score": [0.5, 1.5, 2.5], "ok": [True, False, True]})
    bucket = storage.Client().create_bucket(f"bq-{uuid.uuid4().hex[:8]}")
    bucket.blob("in/scores.parquet").upload_from_string(frame.to_parquet(index=False))
    config = bigquery.LoadJobConfig(source_format="PARQUET")
    job = client.load_table_from_uri(f"gs://{bucket.name}/in/scores.parquet", f"{dataset}.scores", job_config=config)
    job.result()
    assert job.output_rows == 3
    table = client.get_table(f"{dataset}.scores")
    assert [(f.name, f.field_type) for f in table.schema] == [("id", "INTEGER"), ("score", "FLOAT"), ("ok", "BOOLEAN")]
    rows = client.query(f"SELECT SUM(score) AS total FROM {dataset}.scores WHERE ok").result()
    assert [r["total"] for r in rows] == [3.0]


def test_load_table_from_json_with_a_schema_appends_and_autodetects(client, dataset):
    schema = [
        bigquery.SchemaField("name", "STRING"),
        bigquery.SchemaField("score", "FLOAT"),
        bigquery.SchemaField("visits", "INTEGER"),
        bigquery.SchemaField("seen", "TIMESTAMP"),
        bigquery.SchemaField("tags", "STRING", mode="REPEATED"),
    ]
    rows = [
        {"name": "ada", "score": 1.5, "visits": 2, "seen": "2024-01-02T03:04:05Z", "tags": ["x", "y"]},
        {"name": "bob", "score": None, "visits": 3, "tags": []},  # a missing key is NULL, as in BigQuery
    ]
    job = client.load_table_from_json(rows, f"{dataset}.people", job_config=bigquery.LoadJobConfig(schema=schema))
    assert job.result().output_rows == 2
    table = client.get_table(f"{dataset}.people")
    assert [(f.name, f.field_type, f.mode) for f in table.schema] == [
        ("name", "STRING", "NULLABLE"),
        ("score", "FLOAT", "NULLABLE"),
        ("visits", "INTEGER", "NULLABLE"),
        ("seen", "TIMESTAMP", "NULLABLE"),
        ("tags", "STRING", "REPEATED"),
    ]
    ada, bob = sorted(client.list_rows(table), key=lambda r: r["name"])
    assert (ada["score"], ada["visits"], ada["tags"]) == (1.5, 2, ["x", "y"])
    assert ada["seen"] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert (bob["score"], bob["seen"], bob["tags"]) == (None, None, [])

    # Into the existing table (its schema, keys in any order), then a new table with the schema detected.
    client.load_table_from_json([{"visits": 9, "name": "cy"}], f"{dataset}.people").result()
    assert client.get_table(f"{dataset}.people").num_rows == 3
    assert [r["visits"] for r in client.query(f"SELECT visits FROM {dataset}.people WHERE name = 'cy'")] == [9]
    detected = client.load_table_from_json([{"id": 1, "ok": True}, {"id": 2, "ok": False}], f"{dataset}.flags")
    detected.result()
    fields = {(f.name, f.field_type) for f in client.get_table(f"{dataset}.flags").schema}
    assert fields == {("id", "INTEGER"), ("ok", "BOOLEAN")}

    with pytest.raises(BadRequest, match="Error while reading data"):
        client.load_table_from_json([{"visits": "many"}], f"{dataset}.people").result()


def test_a_querys_anonymous_destination_table_can_be_read(client, dataset):
    job = client.query("SELECT n, n * 2 AS twice FROM UNNEST(GENERATE_ARRAY(1, 25)) AS n ORDER BY n")
    job.result()
    destination = job.destination
    assert destination.dataset_id.startswith("_") and destination.table_id.startswith("anon")
    table = client.get_table(destination)
    assert [(f.name, f.field_type) for f in table.schema] == [("n", "INTEGER"), ("twice", "INTEGER")]
    assert table.num_rows == 25 and table.expires > table.created
    rows = client.list_rows(destination, page_size=10)
    assert [(r["n"], r["twice"]) for r in rows] == [(n, 2 * n) for n in range(1, 26)]
    assert [r["n"] for r in client.list_rows(table, start_index=20)] == [21, 22, 23, 24, 25]
    assert client.get_dataset(destination.dataset_id).dataset_id == destination.dataset_id

    # Hidden, as on BigQuery: datasets.list shows it only when asked for all.
    assert destination.dataset_id not in [d.dataset_id for d in client.list_datasets()]
    assert destination.dataset_id in [d.dataset_id for d in client.list_datasets(include_all=True)]
    other = client.query("SELECT 'x' AS s")
    other.result()
    assert other.destination.table_id != destination.table_id  # one anonymous table per query
    assert [r["s"] for r in client.list_rows(other.destination)] == ["x"]

    client.delete_table(destination)
    with pytest.raises(NotFound):
        client.get_table(destination)
    ddl = client.query(f"CREATE TABLE {dataset}.t AS SELECT 1 AS x")
    ddl.result()
    assert ddl.destination is None  # a statement without a result has no anonymous table


def test_tables_persist_across_a_restart(own_cloud, tmp_path, saved_environment):
    from labcloud.localcloud import control

    labcloud.connect("local")
    first = bigquery.Client()
    first.create_dataset("kept")
    first.insert_rows_json(
        first.create_table(bigquery.Table(f"{first.project}.kept.t", schema=[bigquery.SchemaField("x", "INT64")])),
        [{"x": 7}],
    )
    control.stop(tmp_path / "state")
    control.start(tmp_path / "state", port=0)
    labcloud.connect("local")
    assert [r["x"] for r in bigquery.Client().query("SELECT x FROM kept.t").result()] == [7]

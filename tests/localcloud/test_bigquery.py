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

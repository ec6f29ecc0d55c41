"""BigQuery's engine for the local cloud: datasets and tables in one DuckDB file, BigQuery SQL translated by sqlglot."""

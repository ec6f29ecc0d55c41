"""Google Cloud on the local cloud: Cloud Storage, BigQuery (with BigQuery ML) and Vertex AI, over their REST APIs."""

"""The read API (FastAPI, read-only on the store). It never imports `ingest`."""

"""The read API (FastAPI, read-only on the store) and its client, the tail (`taskevents.api.tail`).

It never imports `taskevents.ingest`. Importing this package imports nothing else: the tail client
needs only the `tail` extra, the server the `server` extra.
"""

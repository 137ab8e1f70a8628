"""The ingest worker: the one consumer of the queue and the one writer of the store.

Needs the `server` extra (pip install 'taskevents[server]'). The producer is `taskevents.Emitter`.
"""

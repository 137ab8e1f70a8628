"""`python -m taskevents.ingest`: run the ingest worker (same as `taskevents ingest`)."""

from taskevents.ingest.cli import ingest_command

if __name__ == "__main__":
    ingest_command(prog_name="python -m taskevents.ingest")

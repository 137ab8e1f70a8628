"""`python -m taskevents.api`: serve the read API (same as `taskevents api`)."""

from taskevents.api.cli import api_command

if __name__ == "__main__":
    api_command(prog_name="python -m taskevents.api")

"""`python -m api`: serve the read API (same as `taskevents api`)."""

from api.cli import api_command

if __name__ == "__main__":
    api_command(prog_name="python -m api")

"""`python -m taskevents`: the `taskevents` command."""

from taskevents.cli import main

if __name__ == "__main__":
    main(prog_name="taskevents")

"""What every benchmark script does with its results: progress on stderr, the table on stdout, every
figure to a JSON file."""

import sys
import time
from pathlib import Path
from typing import Any

import orjson


def say(message: str) -> None:
    """Progress goes to stderr so stdout is just the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def publish(results: dict[str, Any], output: Path, table: str) -> None:
    """Write `results` to `output` (JSON, indented) and print `table` and where the JSON went."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    print(table)
    print(f"\nJSON: {output}")

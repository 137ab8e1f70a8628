"""The Procfile (local runs) and docker-compose.yml (deployment) run the same commands, safely configured."""

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskevents.ingest.localredis import SAFE_ARGS

ROOT = Path(__file__).resolve().parent.parent


def procfile() -> dict[str, list[str]]:
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            processes[name.strip()] = shlex.split(command)
    return processes


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"]


def argv(command: str | list[str]) -> list[str]:
    """A compose `command` as an argument list (compose splits a string like a shell, without one)."""
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def healthcheck_argv(test: str | list[str]) -> list[str]:
    if isinstance(test, str):
        return shlex.split(test)
    if test[0] == "CMD":
        return list(test[1:])
    assert test[0] == "CMD-SHELL", test
    return shlex.split(test[1])


def flags(args: list[str]) -> dict[str, str]:
    """`--name value` pairs of a redis-server command line."""
    start = next(i for i, arg in enumerate(args) if arg.startswith("--"))
    pairs = args[start:]
    assert len(pairs) % 2 == 0 and all(name.startswith("--") for name in pairs[::2]), args
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def test_procfile_has_the_worker() -> None:
    assert procfile()["worker"] == ["taskevents", "ingest"]


@pytest.mark.parametrize("name", sorted(set(procfile()) - {"redis"}))
def test_every_procfile_process_is_a_compose_service_with_the_same_command(
    services: dict[str, Any], name: str
) -> None:
    # `redis` is the exception: locally `taskevents redis` provides one, in compose the redis image does.
    assert name in services, f"Procfile process {name!r} has no service in docker-compose.yml"
    assert argv(services[name]["command"]) == procfile()[name]


def test_the_worker_is_health_checked_and_waits_for_a_healthy_redis(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert healthcheck_argv(worker["healthcheck"]["test"]) == ["taskevents", "ingest", "--check"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["environment"]["TASKEVENTS_REDIS_URL"] == "redis://redis:6379/0"
    assert worker["environment"]["TASKEVENTS_DB"].startswith("/data/")
    assert any(str(volume).endswith(":/data") for volume in worker["volumes"])


def test_compose_redis_runs_with_the_safe_configuration(services: dict[str, Any]) -> None:
    redis = services["redis"]
    command = argv(redis["command"])
    assert command[0] == "redis-server"
    safe = flags(list(SAFE_ARGS))
    assert safe["--appendonly"] == "yes" and safe["--maxmemory-policy"] == "noeviction"
    configured = flags(command)
    assert {name: configured.get(name) for name in safe} == safe
    assert "redis-cli ping" in " ".join(healthcheck_argv(redis["healthcheck"]["test"]))
    assert any(str(volume).endswith(":/data") for volume in redis["volumes"])


def test_procfile_has_the_api() -> None:
    assert procfile()["api"] == ["taskevents", "api"]


def test_the_api_reads_the_workers_store_and_is_health_checked(services: dict[str, Any]) -> None:
    api, worker = services["api"], services["worker"]
    assert api["environment"]["TASKEVENTS_DB"] == worker["environment"]["TASKEVENTS_DB"]
    assert api["environment"]["TASKEVENTS_REDIS_URL"] == worker["environment"]["TASKEVENTS_REDIS_URL"]
    assert api["environment"]["TASKEVENTS_API_HOST"] == "0.0.0.0"  # reachable through the published port
    # The same volume, not mounted read-only: a WAL reader must update -shm (SQLite opens it mode=ro).
    assert [v for v in api["volumes"] if str(v).endswith(":/data")] == [
        v for v in worker["volumes"] if str(v).endswith(":/data")
    ]
    assert not any(str(v).endswith(":ro") for v in api["volumes"])
    assert "8000:8000" in [str(p) for p in api["ports"]]
    assert "http://127.0.0.1:8000/api/ready" in " ".join(healthcheck_argv(api["healthcheck"]["test"]))


def test_the_image_installs_what_it_runs() -> None:
    """The worker and the API need the server extra (and the postgres one for a PostgreSQL store);
    the base install is only a runner's producer."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if line.startswith("RUN pip install")]
    assert installs and all("[server,postgres]" in line for line in installs), installs
    for folder in ("shared", "ingest", "api"):
        assert f"COPY {folder} ./{folder}" in dockerfile


def test_the_postgres_profile_runs_one_worker_per_partition_and_the_api_on_one_store(
    services: dict[str, Any],
) -> None:
    profiled = {name for name, service in services.items() if "postgres" in service.get("profiles", [])}
    workers = sorted(name for name in profiled if name.startswith("pg-worker-"))
    assert profiled == {"postgres", "pg-api", "pg-jobs", *workers}
    assert argv(services["pg-jobs"]["command"]) == procfile()["jobs"]
    env = services["pg-api"]["environment"]
    assert env["TASKEVENTS_DB"].startswith("postgresql://") and env["TASKEVENTS_DB"].endswith(
        "@postgres:5432/taskevents"
    )
    assert int(env["TASKEVENTS_PARTITIONS"]) == len(workers) >= 2
    assert argv(services["pg-api"]["command"]) == procfile()["api"]
    partitions = []
    for name in workers:
        service = services[name]
        command = argv(service["command"])
        # The Procfile's worker, given its partition; checked as that partition's worker.
        assert command[:-2] == procfile()["worker"] and command[-2] == "--partition", command
        partitions.append(int(command[-1]))
        assert healthcheck_argv(service["healthcheck"]["test"]) == [
            *procfile()["worker"],
            "--check",
            *command[-2:],
        ]
        for key in ("TASKEVENTS_DB", "TASKEVENTS_QUEUE", "TASKEVENTS_PARTITIONS", "TASKEVENTS_REDIS_URL"):
            assert service["environment"][key] == env[key] == services["pg-jobs"]["environment"][key], key
        # Late events bring archived tasks back from the archives the jobs write.
        assert service["volumes"] == services["pg-jobs"]["volumes"] == services["pg-api"]["volumes"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert partitions == list(range(len(workers)))  # each partition's worker, once
    # Its own queue name: the SQLite stack's events are not the partitioned workers' strays.
    assert env["TASKEVENTS_QUEUE"] != services["worker"]["environment"].get(
        "TASKEVENTS_QUEUE", "taskevents:events"
    )

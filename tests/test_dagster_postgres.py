"""The repository's dagster.yaml stores runs and events in PostgreSQL (the services' `dagster`
database) and carries the run queue, monitoring and retry settings."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._core.run_coordinator import QueuedRunCoordinator

ROOT = Path(__file__).resolve().parents[1]
# One worker: two instances creating Dagster's tables in the same fresh database at once race
# (``type "alembic_version" already exists``).
pytestmark = pytest.mark.xdist_group("dagster_pg")


@pytest.fixture
def instance(tmp_path, monkeypatch, dagster_pg_env):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    with (home / "dagster.yaml").open("a") as config:
        config.write("\ntelemetry:\n  enabled: false\n")  # tests stay off the network
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in dagster_pg_env.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        yield instance


def _pg(env: dict[str, str]) -> psycopg.Connection:
    return psycopg.connect(
        host=env["DAGSTER_PG_HOST"],
        port=env["DAGSTER_PG_PORT"],
        user=env["DAGSTER_PG_USER"],
        password=env["DAGSTER_PG_PASSWORD"],
        dbname=env["DAGSTER_PG_DB"],
    )


def test_materialize_is_recorded_in_postgres(instance, dagster_pg_env) -> None:
    marker = uuid.uuid4().hex

    @dg.asset(name=f"probe_{marker[:12]}")
    def probe() -> str:
        return marker

    result = dg.materialize([probe], instance=instance, tags={"quant/test": marker})
    assert result.success
    run_id = result.run_id

    with _pg(dagster_pg_env) as conn:
        runs = conn.execute(
            "SELECT pipeline_name, status FROM runs WHERE run_id = %s", (run_id,)
        ).fetchall()
        tagged = conn.execute(
            "SELECT run_id FROM run_tags WHERE key = 'quant/test' AND value = %s", (marker,)
        ).fetchall()
        events = conn.execute(
            "SELECT dagster_event_type, asset_key FROM event_logs WHERE run_id = %s", (run_id,)
        ).fetchall()
    assert runs == [(result.dagster_run.job_name, "SUCCESS")]
    assert tagged == [(run_id,)]
    event_types = {event_type for event_type, _ in events}
    # Stored under the enum's values (run events keep their legacy PIPELINE_* names).
    expected = {dg.DagsterEventType.RUN_START, dg.DagsterEventType.RUN_SUCCESS}
    assert {t.value for t in expected} | {"ASSET_MATERIALIZATION"} <= event_types
    materialized = [key for event_type, key in events if event_type == "ASSET_MATERIALIZATION"]
    assert materialized == [dg.AssetKey(probe.key.path).to_string()]


def test_instance_uses_postgres_with_the_configured_driver(instance) -> None:
    for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
        assert type(storage).__name__.startswith("Postgres"), type(storage)
    assert instance.run_storage.postgres_url.startswith("postgresql+psycopg2://")


def test_instance_run_queue_monitoring_and_retries(instance) -> None:
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None
    assert sorted(queue.tag_concurrency_limits, key=lambda limit: limit["key"]) == [
        {"key": "dagster/backfill", "limit": 4},
        {"key": "quant/live-ingest", "limit": 1},
    ]
    assert instance.run_monitoring_enabled
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2

"""An embedded instance made before ``QuantRunLauncher`` was named (its ``dagster.yaml`` has no
``run_launcher:``) kept Dagster's default launcher, which answers Terminate of a terminal
``quant live`` run with "Unable to terminate run". Every command that starts the embedded
instance (``make dev``, the demo, ``quant live``, ``quant backfill``: all through
``quant_cli.dev.dagster_home``) adds the launcher once, keeps the user's other settings and says
so; a file that names a launcher of its own is left alone. Terminate is the UI's GraphQL
mutation against the instance the file describes."""

from __future__ import annotations

import dagster as dg
import yaml
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster_graphql.client.client_queries import TERMINATE_RUNS_JOB_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql

from quant_assets.live_runs import QuantRunLauncher
from quant_cli.dev import dagster_home
from quant_cli.live import dagster_instance_home
from tests.test_ui2_live_runs import started_terminal_run

# What `make dev` wrote before session 8, plus a setting of the user's (no newline at the end).
OLD = (
    "# Embedded default: SQLite storage in this folder.\n"
    "telemetry:\n  enabled: false\n"
    "run_monitoring:\n  enabled: true  # mine\n  poll_interval_seconds: 30"
)


def _terminate(folder) -> tuple[dict, dg.DagsterRunStatus]:
    """Terminate (the UI's mutation) of a running terminal quant live run in the instance at
    ``folder``: the answer and the run's status after it."""
    with dg.DagsterInstance.from_config(str(folder)) as instance:
        run_id = started_terminal_run(instance)  # this test's own process: alive
        with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as workspace:
            result = execute_dagster_graphql(
                workspace.create_request_context(),
                TERMINATE_RUNS_JOB_MUTATION,
                {"runIds": [run_id]},
            )
        assert not result.errors, result.errors
        answer = result.data["terminateRuns"]["terminateRunResults"][0]
        return answer, instance.get_run_by_id(run_id).status


def test_an_old_instance_file_gets_the_run_launcher_once(tmp_path, monkeypatch, capsys) -> None:
    folder = tmp_path / "dagster"
    folder.mkdir()
    config = folder / "dagster.yaml"
    config.write_text(OLD)
    answer, _ = _terminate(folder)  # as it was: Dagster's default launcher
    assert answer["__typename"] == "TerminateRunFailure", answer
    assert "Unable to terminate run" in answer["message"], answer

    monkeypatch.setenv("QUANT_HOME", str(tmp_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert dagster_instance_home(None) == folder  # what quant live does on start
    note = capsys.readouterr().err
    assert note.count("added quant_assets.live_runs.QuantRunLauncher") == 1, note
    assert str(config) in note
    text = config.read_text()
    assert text.startswith(OLD + "\n")  # the user's file, comments and all, kept
    assert yaml.safe_load(text) == {
        **yaml.safe_load(OLD),
        "run_launcher": {"module": "quant_assets.live_runs", "class": "QuantRunLauncher"},
    }
    # once: the next start (make dev, the demo, quant backfill) finds it and says nothing
    assert dagster_home(tmp_path) == folder
    assert config.read_text() == text and capsys.readouterr().err == ""

    with dg.DagsterInstance.from_config(str(folder)) as instance:
        assert isinstance(instance.run_launcher, QuantRunLauncher)
    answer, status = _terminate(folder)
    assert answer["__typename"] == "TerminateRunSuccess", answer
    assert status == dg.DagsterRunStatus.CANCELING  # the process watches for this and stops


def test_a_launcher_of_the_users_own_is_kept(tmp_path, capsys) -> None:
    folder = tmp_path / "dagster"
    folder.mkdir()
    own = "run_launcher:\n  module: dagster\n  class: DefaultRunLauncher\n"
    (folder / "dagster.yaml").write_text(own)
    dagster_home(tmp_path)
    assert (folder / "dagster.yaml").read_text() == own
    assert capsys.readouterr().err == ""
    fresh = dagster_home(tmp_path / "new")  # a new instance names it from the start
    assert "class: QuantRunLauncher" in (fresh / "dagster.yaml").read_text()
    assert capsys.readouterr().err == ""

"""Which Dagster instance a terminal ``quant live`` is a run in: ``QUANT_HOME``'s embedded one
(what ``make demo`` / ``make dev`` keep in ``QUANT_HOME/dagster``) when it exists or is asked
for, else ``DAGSTER_HOME``'s. The run itself (Ctrl-C, Terminate, SIGKILL) is tested with real
processes in ``tests/test_ui2_terminal_runs.py``."""

from __future__ import annotations

from quant_cli.live import dagster_instance_home


def test_the_instance_is_quant_homes_when_it_has_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QUANT_HOME", str(tmp_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert dagster_instance_home(None) is None  # no instance: no Dagster (a fast start)
    assert dagster_instance_home(True) == tmp_path / "dagster"  # --dagster makes it
    assert (tmp_path / "dagster" / "dagster.yaml").exists()
    assert dagster_instance_home(None) == tmp_path / "dagster"  # as after make demo / dev
    assert dagster_instance_home(False) is None  # --no-dagster
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "other"))
    assert dagster_instance_home(None) == tmp_path / "other"

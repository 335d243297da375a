"""``quant backfill``: run a date range of a historical job without the UI.

The range is cut into runs of the job's backfill-policy size (a year becomes ~11 runs, not
252), each recorded in the Dagster instance (``DAGSTER_HOME``, default ``$QUANT_HOME/dagster``)
so the UI shows them like any other run. Re-running a range replaces its partitions.
"""

from __future__ import annotations

import os
from datetime import date

import typer

app = typer.Typer(help="Backfill historical partitions from the command line.")

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def backfill(
    start: str = typer.Option(..., "--from", help="First session, YYYY-MM-DD."),
    end: str = typer.Option(..., "--to", help="Last session, YYYY-MM-DD (inclusive)."),
    job: str = typer.Option("historical_daily_job", help="Job to run over the range."),
    per_run: int | None = typer.Option(
        None, min=1, help="Partitions per run (default: the job's backfill policy, else 25)."
    ),
) -> None:
    """Materialise every partition (NYSE session, or UTC day for crypto_history_job) in
    [--from, --to] of JOB, a few runs at a time."""
    import dagster as dg

    from quant_cli.dev import dagster_home as embedded_dagster_home  # ui3
    from quant_definitions import defs
    from quant_resources.settings import quant_home, setting

    days = {
        j.name: j.partitions_def
        for j in defs.get_repository_def().get_all_jobs()
        if isinstance(j.partitions_def, dg.TimeWindowPartitionsDefinition)
    }
    if job not in days:
        raise typer.BadParameter(
            f"--job={job!r} is not a job over NYSE sessions or UTC days; valid jobs: "
            f"{', '.join(sorted(days))}"
        )
    first, last = _day("--from", start), _day("--to", end)
    if last < first:
        raise typer.BadParameter(f"--to={end} is before --from={start}")
    keys = [k for k in days[job].get_partition_keys() if first.isoformat() <= k <= last.isoformat()]
    if not keys:
        raise typer.BadParameter(f"no partitions of {job} between {start} and {end}")
    # ui3: the embedded instance is made (or given its run launcher) as make dev makes it
    instance_home = setting("DAGSTER_HOME") or str(embedded_dagster_home(quant_home()))
    os.environ["DAGSTER_HOME"] = instance_home  # where DagsterInstance.get() looks
    os.makedirs(instance_home, exist_ok=True)
    instance = dg.DagsterInstance.get()
    job_def = defs.get_job_def(job)
    per_run = per_run or _policy_size(job_def)
    chunks = [keys[i : i + per_run] for i in range(0, len(keys), per_run)]
    failed = []
    with typer.progressbar(length=len(keys), label=f"{job} {keys[0]}..{keys[-1]}") as bar:
        for chunk in chunks:
            result = job_def.execute_in_process(
                instance=instance,
                tags={RANGE_START: chunk[0], RANGE_END: chunk[-1]},
                raise_on_error=False,
            )
            if not result.success:
                failed.append(f"{chunk[0]}..{chunk[-1]} (run {result.run_id})")
            bar.update(len(chunk))
    typer.echo(f"{len(keys)} partitions in {len(chunks)} runs; failed: {len(failed)}")
    if failed:
        typer.echo("failed ranges: " + ", ".join(failed), err=True)
        raise typer.Exit(1)


def _policy_size(job_def) -> int:
    """The smallest ``max_partitions_per_run`` of the job's assets (crypto_history holds its
    days in memory: 7), else 25."""
    graph = job_def.asset_layer.asset_graph
    sizes = [
        policy.max_partitions_per_run
        for key in graph.executable_asset_keys
        if (policy := graph.get(key).backfill_policy) and policy.max_partitions_per_run
    ]
    return min(sizes, default=25)


def _day(flag: str, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{flag}={text!r} is not a date (YYYY-MM-DD)") from exc

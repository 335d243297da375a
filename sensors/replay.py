"""``new_session_logs``: registers closed sessions found in the lake and verifies each once."""

from __future__ import annotations

import dagster as dg
import orjson

from quant_assets.jobs import replay_verification_job
from quant_assets.replay import SESSIONS_PREFIX, replay_sessions
from quant_resources.lake import LakeResource
from sensors.interval import sensor_interval

MANIFEST = "session.json"


def closed_sessions(lake: LakeResource) -> list[str]:
    """Sessions whose manifest in the lake says they were closed (uploaded last, see live)."""
    found = []
    for key in lake.list(SESSIONS_PREFIX):
        if key.endswith(f"/{MANIFEST}"):
            manifest = orjson.loads(lake.read_bytes(key))
            if manifest.get("state") == "closed":
                found.append(key[len(SESSIONS_PREFIX) :].split("/", 1)[0])
    return sorted(found)


@dg.sensor(
    job=replay_verification_job,
    minimum_interval_seconds=sensor_interval(60),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a replay_sessions partition per closed session log and verifies it.",
)
def new_session_logs(context: dg.SensorEvaluationContext, lake: LakeResource):
    known = set(context.instance.get_dynamic_partitions(replay_sessions.name))
    new = [s for s in closed_sessions(lake) if s not in known]
    if not new:
        return dg.SkipReason("no new closed session logs in the lake")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=s, run_key=f"replay-{s}") for s in new],
        dynamic_partitions_requests=[replay_sessions.build_add_request(new)],
    )

"""The daemon's share of liveness (sparklio_assets/liveness.py): every 30 s, end the runs whose
writer died, free the pool slots runs that ended still hold, and sweep leftover `.part` files and
empty job folders, so a fault is cleaned up even when no CLI command or API request comes.

A sensor because it is the daemon's periodic hook that needs no run: it never requests one.
Dagster's own run monitoring (dagster.yaml `run_monitoring`) does the same for the runs the daemon
launches, as far as the default run launcher allows (start/cancel timeouts, freeing slots).
"""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from resources.artifacts import ArtifactStore
from sparklio_assets import liveness


def build_liveness_sensor(minimum_interval_seconds: int = 30):
    @sensor(name="liveness_sensor", minimum_interval_seconds=minimum_interval_seconds,
            default_status=DefaultSensorStatus.RUNNING,
            description="Ends runs whose worker died, frees their pool slots, sweeps leftovers.")
    def liveness_sensor(context: SensorEvaluationContext, store: ArtifactStore):
        ended = liveness.reap(context.instance, store)
        swept = liveness.sweep(store)
        for run_id in ended:
            context.log.warning(f"run {run_id}: {liveness.WORKER_DIED}; ended and its slots freed")
        return SkipReason(f"{len(ended)} run(s) of dead workers ended, {swept} leftover(s) swept")

    return liveness_sensor

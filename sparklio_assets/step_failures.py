"""Why a Dagster step failed, in one line: read the same way by the pipeline (which raises it) and
by the API (which reports it in a job's status)."""

from __future__ import annotations

from dagster import DagsterEvent


def step_failure_reason(event: DagsterEvent | None) -> str:
    """The failure's own description (`Failure(description=...)`) when the asset raised one, else
    the exception's message; '' when the event carries neither."""
    data = event.step_failure_data if event is not None else None
    if data is None:
        return ""
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description.strip()
    return data.error.message.strip() if data.error is not None else ""


def describe_step_failures(events: list[DagsterEvent]) -> str:
    """`step: reason; step: reason` for a failed run's step-failure events."""
    return "; ".join(f"{e.step_key}: {reason}" for e in events if (reason := step_failure_reason(e)))


def failure_report(events: list[DagsterEvent]) -> str:
    """Every failed step's whole error (traceback and causes), for the run's failure log."""
    parts = []
    for event in events:
        data = event.step_failure_data
        error = data.error.to_string() if data is not None and data.error is not None else "(no error recorded)"
        parts.append(f"step {event.step_key}: {step_failure_reason(event) or 'failed'}\n\n{error}")
    return "\n\n".join(parts) + "\n"

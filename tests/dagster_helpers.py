"""Reading Dagster results in tests."""

from __future__ import annotations


def failure_text(result) -> str:
    """The first step failure's message with every cause, as a user sees it in the UI."""
    error = result.get_step_failure_events()[0].event_specific_data.error
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause or error.context
    return "\n".join(parts)

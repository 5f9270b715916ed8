"""Running a Hypothesis state machine against the tests' server (imported by the tests that
have one, as `recording` is)."""

from __future__ import annotations

import redis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test


def run_machine(
    machine: type[RuleBasedStateMachine], client: redis.Redis, *, examples: int, steps: int
) -> None:
    """Run `machine`, whose rules reach Redis through its class attribute `client`."""
    machine.client = client
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        del machine.client  # type: ignore[attr-defined]

"""The health-check settings embedded Ray is started with (the chaos tests measure what they buy)."""

from __future__ import annotations

from placement import FAILURE_DETECTION, ray_start_environment, with_failure_detection


def test_a_ray_started_here_gets_the_settings_and_callers_settings_win() -> None:
    kwargs = with_failure_detection(
        {"num_cpus": 2, "_system_config": {"health_check_period_ms": 250}}, "local"
    )
    assert kwargs["num_cpus"] == 2
    assert kwargs["_system_config"] == {**FAILURE_DETECTION, "health_check_period_ms": 250}


def test_joining_a_cluster_keeps_its_own_settings() -> None:
    for address in ("auto", "ray://head:10001", "10.0.0.1:6379"):
        assert "_system_config" not in with_failure_detection({"num_cpus": 2}, address)


def test_a_dead_node_is_noticed_in_seconds_and_a_slow_one_has_time_to_answer() -> None:
    period, threshold = (
        FAILURE_DETECTION["health_check_period_ms"],
        FAILURE_DETECTION["health_check_failure_threshold"],
    )
    assert period * threshold <= 1500  # processes gone: every check fails at once
    assert (
        FAILURE_DETECTION["health_check_timeout_ms"] >= 5 * period
    )  # starved: each check may wait
    env = ray_start_environment()
    assert env["RAY_health_check_period_ms"] == str(period) and len(env) == len(FAILURE_DETECTION)

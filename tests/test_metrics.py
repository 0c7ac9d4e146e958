"""What the worker counts, unit by unit: waits by reason, outcomes, token renewals, labels.

The end-to-end counts against a real API are in test_metrics_e2e.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis
from prometheus_client import REGISTRY

from tests.support.admission import PROFILE, FakeLimiter, gate
from tests.support.oauth import Provider, authoriser, oauth_profile
from worker import metrics
from worker.admission import Wait
from worker.keys import Keys
from worker.metricserver import MetricsConfig
from worker.ratelimit import RateDecision
from worker.settings import SettingsError


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_kind_of_wait_says_what_it_waits_for() -> None:
    full = gate(FakeLimiter([], slots_free=False), []).enter(replace(PROFILE, concurrency=1))
    paused = gate(FakeLimiter([RateDecision(3.0, True, False)]), []).enter(PROFILE)
    budget = gate(FakeLimiter([RateDecision(3.0, False, False)]), []).enter(PROFILE)
    assert isinstance(full, Wait)
    assert full.kind == "concurrency"
    assert isinstance(paused, Wait)
    assert paused.kind == "pause"
    assert isinstance(budget, Wait)
    assert budget.kind == "rate"


def test_a_short_wait_for_a_reserved_slot_is_counted_as_a_rate_wait() -> None:
    before = value("reqworker_waits_total", api="api", reason="rate")
    gate(FakeLimiter([RateDecision(0.3, False, True)]), []).enter(PROFILE)
    assert value("reqworker_waits_total", api="api", reason="rate") == before + 1


def test_outcomes_count_jobs_and_backoff_retries() -> None:
    api = "outcomes"
    job = {"api": api, "path": "/x"}
    metrics.ended(job, succeeded=True)
    metrics.ended(job, succeeded=False)
    metrics.retried(job)
    metrics.ended("not a job", succeeded=False)
    assert value("reqworker_jobs_total", api=api, outcome="succeeded") == 1
    assert value("reqworker_jobs_total", api=api, outcome="failed") == 1
    assert value("reqworker_retries_total", api=api) == 1
    assert value("reqworker_jobs_total", api="unknown", outcome="failed") >= 1


def test_a_message_with_a_strange_api_is_counted_under_unknown() -> None:
    assert metrics.api_label("https://evil.example/x?token=1") == "unknown"
    assert metrics.api_label(None) == "unknown"
    assert metrics.api_label("spotify.v1") == "spotify.v1"


def test_token_renewals_count_each_token_obtained_once_for_the_fleet(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    profile = oauth_profile(provider)
    before = value("reqworker_token_renewals_total", api=profile.name)
    first, second = authoriser(profile, client, keys), authoriser(profile, client, keys)
    creds = first.credentials()
    assert second.credentials() == creds
    assert first.renew(creds)
    assert second.renew(creds)
    assert provider.token_calls() == 2
    assert value("reqworker_token_renewals_total", api=profile.name) == before + 2


def test_metrics_settings_come_from_the_environment() -> None:
    assert MetricsConfig.from_env({}) == MetricsConfig(None, "127.0.0.1")
    config = MetricsConfig.from_env({"REQWORKER_METRICS_PORT": "9101",
                                     "REQWORKER_METRICS_ADDRESS": "0.0.0.0"})
    assert config == MetricsConfig(9101, "0.0.0.0")
    with pytest.raises(SettingsError, match="REQWORKER_METRICS_PORT"):
        MetricsConfig.from_env({"REQWORKER_METRICS_PORT": "http"})

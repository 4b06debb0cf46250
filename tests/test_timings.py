"""Event-loop lag and plan durations: the histograms, the sampler, and /metrics."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import SiteHarness, wait_until
from test_web_api import parse_metrics

from bridge.aio import cancel_and_wait
from bridge.timings import LAG_BUCKETS_S, Histogram, sample_loop_lag
from bridge.web.metrics import render_metrics


def test_histogram_counts_a_value_in_the_first_bucket_it_does_not_exceed():
    histogram = Histogram((0.1, 1.0))
    for value in (0.0, 0.1, 0.1000001, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.buckets() == (2, 4, 5)  # <= 0.1, <= 1, +Inf (cumulative)
    assert histogram.count == 5
    assert histogram.total == pytest.approx(8.2000001)
    with pytest.raises(ValueError):
        Histogram((1.0, 0.1))


async def test_the_sampler_sees_a_stall_of_the_loop():
    histogram = Histogram(LAG_BUCKETS_S)
    sampler = asyncio.create_task(sample_loop_lag(histogram, interval_s=0.05))
    try:
        await wait_until(lambda: histogram.count >= 3, what="a few samples")
        before = histogram.count
        time.sleep(0.4)  # holds the loop, as a long plan would
        await wait_until(lambda: histogram.count >= before + 2, what="samples after the stall")
    finally:
        await cancel_and_wait([sampler])
    above_quarter_second = histogram.count - histogram.buckets()[LAG_BUCKETS_S.index(0.25)]
    assert above_quarter_second >= 1
    assert histogram.total >= 0.3  # the sum is about the time the loop was held


def _value(metrics: dict[str, float], name: str) -> float:
    return metrics.get(name, float("nan"))


async def test_metrics_show_event_loop_lag_and_plan_durations(site: SiteHarness):
    bridge = await site.start_bridge()
    station = site.add_station("CP1")
    await wait_until(lambda: station.transaction_id is not None, what="a session")
    await wait_until(lambda: parse_metrics(render_metrics(bridge.view)).get(
        "drbridge_event_loop_lag_seconds_count", 0) >= 3, what="lag samples")
    before = bridge.loop_lag.count
    time.sleep(0.4)  # the whole bridge waits, as every station would behind a long plan
    await wait_until(lambda: bridge.loop_lag.count >= before + 2, what="samples after the stall")
    text = render_metrics(bridge.view)
    assert "# TYPE drbridge_event_loop_lag_seconds histogram" in text
    assert "# TYPE drbridge_plan_duration_seconds histogram" in text
    metrics = parse_metrics(text)
    count = _value(metrics, "drbridge_event_loop_lag_seconds_count")
    assert _value(metrics, 'drbridge_event_loop_lag_seconds_bucket{le="+Inf"}') == count
    assert _value(metrics, 'drbridge_event_loop_lag_seconds_bucket{le="0.25"}') < count
    assert _value(metrics, "drbridge_event_loop_lag_seconds_sum") >= 0.3
    # at least the start-up plan and the one for the new session, each timed
    plans = _value(metrics, "drbridge_plan_duration_seconds_count")
    assert plans >= 2
    assert _value(metrics, 'drbridge_plan_duration_seconds_bucket{le="10.0"}') <= plans
    assert 0 < _value(metrics, "drbridge_plan_duration_seconds_sum") < 10 * plans
    last = _value(metrics, "drbridge_plan_last_end_timestamp_seconds")
    assert time.time() - 120 < last <= time.time()

"""Progress lines: speed and ETA only from jobs seen finishing while watching (no clock, no sleeping)."""

from __future__ import annotations

import io

import pytest

from producer.client import Counts
from producer.progress import ProgressView, ResultsBar, Speed, describe


def test_attached_to_a_nearly_done_batch_the_speed_is_unknown_until_jobs_finish() -> None:
    speed = Speed()
    speed.observe(1000.0, 18_000)  # 90 % of 20,000 already done before watching
    assert speed.rate() is None
    speed.observe(1000.5, 18_000)
    assert speed.rate() == 0.0
    speed.observe(1002.5, 18_010)
    assert speed.rate() == pytest.approx(10 / 2.5)
    assert speed.watched() == pytest.approx((10, 2.5))


def test_speed_follows_the_recent_pace() -> None:
    speed = Speed(window_s=30)
    for second in range(0, 61):
        speed.observe(float(second), 100 * min(second, 30) + 10 * max(second - 30, 0))
    # The last 30 s ran at 10 jobs/s, whatever came before.
    assert speed.rate() == pytest.approx(10, rel=0.1)


def test_the_line_shows_every_count_and_an_eta_from_the_observed_rate() -> None:
    counts = Counts(pending=3, waiting=2, retrying=2, succeeded=12, failed=1)
    line = describe(counts, counts.total, 2.0)
    assert line.startswith("13/20 done, pending 3, waiting 2, retrying 2, succeeded 12, failed 1, ")
    assert "2.0 jobs/s, eta 4s" in line
    assert "- jobs/s, eta -" in describe(counts, counts.total, None)


def test_a_piped_view_prints_the_first_line_at_once_and_a_summary_at_the_end() -> None:
    out = io.StringIO()
    view = ProgressView(20, stream=out)
    view.update(Counts(pending=10, succeeded=10))
    view.update(Counts(succeeded=20))
    view.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("10/20 done")
    assert "- jobs/s" in lines[0]
    assert lines[1].startswith("20/20 done")
    assert lines[-1].startswith("10 jobs finished while watching")


def test_the_results_bar_redraws_every_few_records_and_ends_its_line() -> None:
    out = io.StringIO()
    bar = ResultsBar(10, out, every=5)
    for n in range(1, 11):
        bar.update(n)
    bar.update(10, last=True)
    text = out.getvalue()
    assert text.count("\r") == 3
    assert text.endswith("10/10 results\033[K\n")
    assert " 50% 5/10 results" in text

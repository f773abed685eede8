"""The backtest's chart of tasks by family: a bar per day up to three months, per week,
month or year past it, so a ten-year `--to` no longer draws a PNG 183,100 px wide."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from moments.backtest_report import CHART_MAX_BARS, chart_html, chart_png

FAMILIES = ("anomaly", "first_time", "special_day")


def report_of(first: dt.date, days: int) -> dict[str, Any]:
    """`days` days from `first`, each family (i * 7 + j * 3) % 50 + 1 tasks a day; the
    first and last days covered in part."""
    every = [(first + dt.timedelta(days=i)).isoformat() for i in range(days)]
    rows = [
        {"day": d, "family": f, "tasks": (i * 7 + j * 3) % 50 + 1}
        for i, d in enumerate(every)
        for j, f in enumerate(FAMILIES)
    ]
    return {
        "tasks_per_day": {"family": rows},
        "days": every,
        "partial_days": {every[0]: "from 10:00", every[-1]: "to 10:05"},
    }


def drawn(report: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, Figure]:
    """The PNG `chart_png` makes and the figure it saved."""
    figures: list[Figure] = []
    save = Figure.savefig

    def keep(fig: Figure, *args: Any, **kwargs: Any) -> None:
        figures.append(fig)
        save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    png = chart_png(report)
    (fig,) = figures
    return png, fig


def width(png: bytes) -> int:
    return int(imread(io.BytesIO(png)).shape[1])


def bar_totals(fig: Figure) -> list[float]:
    """Each bar's stacked height, left to right."""
    (ax,) = fig.axes
    tops: dict[float, float] = {}
    for patch in ax.patches:
        assert isinstance(patch, Rectangle)
        x = round(patch.get_x(), 6)
        tops[x] = max(tops.get(x, 0.0), patch.get_y() + patch.get_height())
    return [tops[x] for x in sorted(tops)]


class TestChartBars:
    def test_two_years_draw_a_bar_a_month_in_a_bounded_width(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two years (2025-12-08 to 2027-12-07) drew 730 half-inch bars, 36,950 px wide;
        they are 25 months, the first and last covered in part, each bar its month's sum."""
        report = report_of(dt.date(2025, 12, 8), 730)
        png, fig = drawn(report, monkeypatch)
        assert width(png) <= (0.5 * CHART_MAX_BARS + 4.5) * 100
        (ax,) = fig.axes
        assert ax.get_title() == "Tasks per month by family"
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert len(labels) == 25
        assert labels[0] == "2025-12\n(part)"
        assert labels[1] == "2026-01"
        assert labels[-1] == "2027-12\n(part)"
        per_month: dict[str, int] = {}
        for row in report["tasks_per_day"]["family"]:
            per_month[row["day"][:7]] = per_month.get(row["day"][:7], 0) + row["tasks"]
        assert bar_totals(fig) == [per_month[m] for m in sorted(per_month)]

    def test_past_three_months_a_bar_is_a_week_from_monday(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """200 days from Wednesday 2026-01-07 to Saturday 2026-07-25: 29 weeks, labelled
        by their Mondays, the first (from Wednesday) and last (to Saturday) in part."""
        report = report_of(dt.date(2026, 1, 7), 200)
        _, fig = drawn(report, monkeypatch)
        (ax,) = fig.axes
        assert ax.get_title() == "Tasks per week (Monday to Sunday) by family"
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels[0] == "2026-01-05\n(part)"
        assert labels[1] == "2026-01-12"
        assert labels[-1] == "2026-07-20\n(part)"
        assert len(labels) == 29
        assert sum(bar_totals(fig)) == sum(r["tasks"] for r in report["tasks_per_day"]["family"])

    def test_three_months_are_drawn_a_bar_a_day_as_before(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """92 days keep a bar per day, labelled as the tables label their days."""
        report = report_of(dt.date(2026, 1, 1), CHART_MAX_BARS)
        png, fig = drawn(report, monkeypatch)
        (ax,) = fig.axes
        assert ax.get_title() == "Tasks per day by family"
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels[0] == "2026-01-01\n(from 10:00)"
        assert labels[1:-1] == report["days"][1:-1]
        assert width(png) == (0.5 * CHART_MAX_BARS + 4.5) * 100

    def test_a_weeks_png_is_the_one_main_drew(self) -> None:
        """Byte for byte the PNG main's `chart_png` drew for this week (matplotlib 3.11.2,
        constraints.txt): a usual range is drawn exactly as before."""
        png = chart_png(report_of(dt.date(2026, 12, 8), 7))
        assert hashlib.sha256(png).hexdigest() == WEEK_PNG_SHA256, (
            "the per-day chart changed; if only matplotlib was upgraded, recompute the digest "
            "with the previous release's chart_png on this report"
        )


class TestChartInThePage:
    def test_the_page_says_what_a_bar_is(self) -> None:
        """Past three months the page's image and a note name the bar (a month here) and
        say the tables are per day; up to three months it reads as before."""
        long = report_of(dt.date(2025, 12, 8), 730)
        page = "".join(chart_html(long, b""))
        assert '<img alt="Tasks per month by family"' in page
        assert re.search(r"One bar of the chart is a month .*the tables below are per day", page)
        short = "".join(chart_html(report_of(dt.date(2026, 12, 8), 7), b""))
        assert '<img alt="Tasks per day by family"' in short
        assert "One bar of the chart" not in short


WEEK_PNG_SHA256 = "feed4176b2c95b0fe35423f3ff3ec93667caeee05d5b9a62516a2a376c4901d2"
"""sha256 of main's (before the week/month bars) `chart_png` on `report_of(2026-12-08, 7)`."""


def test_a_first_backtest_prints_no_matplotlib_log_line(tmp_path: Path) -> None:
    """matplotlib builds its font cache on a machine's first chart and logs it at INFO
    (`INFO matplotlib.font_manager: generated new fontManager`), which the CLI's INFO
    logging printed in the middle of a new analyst's first report. A fresh MPLCONFIGDIR
    is that first time."""
    import subprocess
    import sys

    events = tmp_path / "events.jsonl"
    simulate = [sys.executable, "-m", "moments", "simulate", "--subscribers", "5"]
    simulate += ["--rate", "1", "--duration", "60", "--seed", "1", "--to-file", str(events)]
    subprocess.run(simulate, check=True, capture_output=True)
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    backtest = [sys.executable, "-m", "moments", "backtest", "--events", str(events)]
    done = subprocess.run(
        [*backtest, "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "tasks_per_day.png").is_file()  # the chart was drawn
    assert (tmp_path / "mpl").is_dir()  # and matplotlib built its cache there
    assert "matplotlib" not in done.stderr, done.stderr

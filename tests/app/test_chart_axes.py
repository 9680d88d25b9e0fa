"""The dashboard's charts: the y axis starts at zero and labels it (issue 20, item 7)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtGui import QImage, QPainter
from pytestqt.qtbot import QtBot

from app.dashboard import Chart
from app.theme import current


def left_labels(chart: Chart) -> list[str]:
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = chart.getAxis("left").generateDrawSpecs(painter)
    finally:
        painter.end()
    return [] if specs is None else [text for _rect, _flags, text in specs[2]]


@pytest.mark.parametrize(("top", "height"), [(1.2, 250), (0.004, 160), (3400.0, 400)])
def test_the_y_axis_labels_zero(qtbot: QtBot, top: float, height: int) -> None:
    chart = Chart("Requests", "requests/s", current())
    qtbot.addWidget(chart)
    chart.resize(520, height)
    chart.show()
    now = time.time()
    chart.curve("ollama", "#2e9d5b").setData(np.array([now - 60, now]), np.array([top / 2, top]))
    chart.frame(now - 60, now, top)
    qtbot.waitExposed(chart)
    labels = left_labels(chart)
    assert labels and labels[0] in ("0", "0.0", "0.000"), labels
    low, high = chart.getViewBox().viewRange()[1]
    assert -0.1 * high < low <= 0 < top < high  # from zero (a few pixels under it for the label), never negative data


def test_no_data_shows_no_invented_scale(qtbot: QtBot) -> None:
    chart = Chart("Requests", "requests/s", current())
    qtbot.addWidget(chart)
    chart.resize(520, 250)
    now = time.time()
    chart.frame(now - 60, now, 0.0)
    assert chart.empty.isVisible() and left_labels(chart) == []

"""The tray icon, drawn with QPainter: one mark, a state badge, and a macOS template variant.

The mark is a ring with a spark (OMEN: watching every request). The badge in the lower
right says the state at a glance: green healthy, amber degraded, red no provider, a
violet gauge for a quota near its limit, grey stopped. On macOS the menu bar wants a
template image (black + alpha, recoloured by the system), so the state is drawn as a
shape there (a dot, a bar, a cross), not a colour.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap

# the states of app.state (not imported: this module loads at start-up, numpy does not)
HEALTHY, DEGRADED, DOWN, QUOTA, STOPPED = "healthy", "degraded", "down", "quota", "stopped"

COLORS = {
    HEALTHY: QColor("#2e9d5b"),
    DEGRADED: QColor("#e0a100"),
    DOWN: QColor("#d23b3b"),
    QUOTA: QColor("#7b4fd6"),
    STOPPED: QColor("#8a8f98"),
}
INK = QColor("#2b3340")
ACCENT = QColor("#3b6fd8")
SIZES = (16, 22, 24, 32, 48, 64, 128)


def _mark(p: QPainter, s: float, ink: QColor, accent: QColor) -> None:
    """The ring and the spark, in a square of side ``s``."""
    pen = QPen(ink, s * 0.11)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    p.setPen(pen)
    p.setBrush(Qt.BrushStyle.NoBrush)
    r = QRectF(s * 0.12, s * 0.12, s * 0.76, s * 0.76)
    p.drawArc(r, 50 * 16, 240 * 16)  # an open ring: the gap on the right, where the badge sits
    spark = QPainterPath()
    c = QPointF(s * 0.5, s * 0.5)
    k = s * 0.2
    spark.moveTo(c.x(), c.y() - k)
    spark.quadTo(c.x(), c.y(), c.x() + k, c.y())
    spark.quadTo(c.x(), c.y(), c.x(), c.y() + k)
    spark.quadTo(c.x(), c.y(), c.x() - k, c.y())
    spark.quadTo(c.x(), c.y(), c.x(), c.y() - k)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(accent))
    p.drawPath(spark)


def _badge(p: QPainter, s: float, state: str, template: bool) -> None:
    if state == HEALTHY and template:
        return  # the plain mark is "all well" in the menu bar
    d = s * 0.42
    rect = QRectF(s - d - s * 0.02, s - d - s * 0.02, d, d)
    if template:
        p.setCompositionMode(QPainter.CompositionMode.CompositionMode_Clear)
        p.setBrush(QBrush(Qt.GlobalColor.black))
        p.setPen(Qt.PenStyle.NoPen)
        p.drawEllipse(rect.adjusted(-s * 0.06, -s * 0.06, s * 0.06, s * 0.06))
        p.setCompositionMode(QPainter.CompositionMode.CompositionMode_SourceOver)
        color = QColor(Qt.GlobalColor.black)
    else:
        color = COLORS[state]
        p.setPen(QPen(QColor("white"), max(1.0, s * 0.05)))
    p.setBrush(QBrush(color))
    if template:
        p.setPen(Qt.PenStyle.NoPen)
    p.drawEllipse(rect)
    glyph = QPen(QColor("white") if not template else QColor(0, 0, 0, 0), max(1.2, s * 0.07))
    glyph.setCapStyle(Qt.PenCapStyle.RoundCap)
    if template:  # shapes cut out of the badge
        p.setCompositionMode(QPainter.CompositionMode.CompositionMode_Clear)
        glyph.setColor(QColor(Qt.GlobalColor.black))
    p.setPen(glyph)
    c = rect.center()
    q = d * 0.22
    if state == DOWN:
        p.drawLine(QPointF(c.x() - q, c.y() - q), QPointF(c.x() + q, c.y() + q))
        p.drawLine(QPointF(c.x() - q, c.y() + q), QPointF(c.x() + q, c.y() - q))
    elif state == DEGRADED:
        p.drawLine(QPointF(c.x(), c.y() - q * 1.2), QPointF(c.x(), c.y() + q * 0.3))
        p.drawPoint(QPointF(c.x(), c.y() + q * 1.2))
    elif state == QUOTA:  # a gauge: three rising bars
        for k, h in ((-1, 0.6), (0, 1.2), (1, 1.8)):
            x = c.x() + k * q * 0.95
            p.drawLine(QPointF(x, c.y() + q), QPointF(x, c.y() + q - q * h))
    elif state == STOPPED:
        p.drawLine(QPointF(c.x() - q, c.y()), QPointF(c.x() + q, c.y()))
    if template:
        p.setCompositionMode(QPainter.CompositionMode.CompositionMode_SourceOver)


def pixmap(state: str, size: int, *, template: bool = False, dpr: float = 1.0) -> QPixmap:
    px = QPixmap(int(size * dpr), int(size * dpr))
    px.setDevicePixelRatio(dpr)
    px.fill(Qt.GlobalColor.transparent)
    p = QPainter(px)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    black = QColor(Qt.GlobalColor.black)
    if template:
        _mark(p, size, black, black)
    else:
        _mark(p, size, INK if state != STOPPED else COLORS[STOPPED], ACCENT if state != STOPPED else COLORS[STOPPED])
    _badge(p, size, state, template)
    p.end()
    return px


def state_icon(state: str, *, template: bool = False) -> QIcon:
    """The tray icon for ``state``; ``template`` for the macOS menu bar (``isMask``)."""
    icon = QIcon()
    for size in SIZES:
        icon.addPixmap(pixmap(state, size, template=template))
        if template:
            icon.addPixmap(pixmap(state, size, template=True, dpr=2.0))
    if template:
        icon.setIsMask(True)
    return icon


def app_icon() -> QIcon:
    """The window icon: the mark without a badge, on a soft tile."""
    icon = QIcon()
    for size in (16, 32, 48, 64, 128, 256):
        px = QPixmap(size, size)
        px.fill(Qt.GlobalColor.transparent)
        p = QPainter(px)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QBrush(QColor("#eef2fb")))
        p.drawRoundedRect(QRectF(0, 0, size, size), size * 0.22, size * 0.22)
        p.translate(size * 0.1, size * 0.1)
        _mark(p, size * 0.8, INK, ACCENT)
        p.end()
        icon.addPixmap(px)
    return icon

"""The tray icon, drawn with QPainter: the brand mark, a state badge, and a macOS template.

The mark is the eye on a violet tile of resources/icons/omen.svg (what the installers
ship), drawn here so every size and state stays crisp. The badge in the lower right says
the state at a glance: green healthy, amber degraded, red no provider, a blue gauge for
a quota near its limit, and a grey tile when stopped. On macOS the menu bar wants a
template image (black + alpha, recoloured by the system), so the state is drawn as a
shape there (a dot, a bar, a cross), not a colour.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QIcon,
    QLinearGradient,
    QPainter,
    QPainterPath,
    QPen,
    QPixmap,
    QRadialGradient,
)

# the states of app.state (not imported: this module loads at start-up, numpy does not)
HEALTHY, DEGRADED, DOWN, QUOTA, STOPPED = "healthy", "degraded", "down", "quota", "stopped"

COLORS = {
    HEALTHY: QColor("#2e9d5b"),
    DEGRADED: QColor("#e0a100"),
    DOWN: QColor("#d23b3b"),
    QUOTA: QColor("#1971c2"),
    STOPPED: QColor("#8a8f98"),
}
SIZES = (16, 22, 24, 32, 48, 64, 128)


def _mark(p: QPainter, s: float, state: str) -> None:
    """The brand mark (resources/icons/omen.svg): an eye on a violet tile, drawn at ``s`` px."""
    k = s / 256.0
    tile = QLinearGradient(0, 0, s, s)
    if state == STOPPED:
        tile.setColorAt(0, QColor("#a3a8b3"))
        tile.setColorAt(1, QColor("#5f6470"))
    else:
        tile.setColorAt(0, QColor("#6d4aff"))
        tile.setColorAt(1, QColor("#2a1a7a"))
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(tile))
    p.drawRoundedRect(QRectF(8 * k, 8 * k, 240 * k, 240 * k), 56 * k, 56 * k)
    p.setBrush(QBrush(QColor("white")))
    p.drawPath(_eye(k))
    iris = QRadialGradient(QPointF(128 * k, 118 * k), 60 * k)
    iris.setColorAt(0, QColor("#7fe3ff") if state != STOPPED else QColor("#d0d4db"))
    iris.setColorAt(1, QColor("#1c9bd8") if state != STOPPED else QColor("#8a8f98"))
    p.setBrush(QBrush(iris))
    p.drawEllipse(QPointF(128 * k, 128 * k), 46 * k, 46 * k)
    p.setBrush(QBrush(QColor("#14103a")))
    p.drawEllipse(QPointF(128 * k, 128 * k), 21 * k, 21 * k)
    if s >= 24:
        p.setBrush(QBrush(QColor(255, 255, 255, 230)))
        p.drawEllipse(QPointF(143 * k, 112 * k), 9 * k, 9 * k)


def _eye(k: float) -> QPainterPath:
    path = QPainterPath()
    path.moveTo(28 * k, 128 * k)
    path.cubicTo(68 * k, 60 * k, 188 * k, 60 * k, 228 * k, 128 * k)
    path.cubicTo(188 * k, 196 * k, 68 * k, 196 * k, 28 * k, 128 * k)
    path.closeSubpath()
    return path


def _template_mark(p: QPainter, s: float) -> None:
    """The eye as a mask for the macOS menu bar: outline and pupil, black on transparent."""
    k = s / 256.0
    pen = QPen(QColor("black"), 22 * k)
    pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    p.setPen(pen)
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawPath(_eye(k))
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(QColor("black")))
    p.drawEllipse(QPointF(128 * k, 128 * k), 44 * k, 44 * k)


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
    if template:
        _template_mark(p, size)
    else:
        _mark(p, size, state)
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
    """The window icon: the shipped artwork (resources/icons, as the installers use), else drawn."""
    icon = QIcon()
    try:
        from importlib import resources

        folder = resources.files("omen_local.resources").joinpath("icons")
        for size in (16, 24, 32, 48, 64, 128, 256, 512):
            f = folder.joinpath(f"omen-{size}.png")
            if f.is_file():
                icon.addFile(str(f))
    except (ModuleNotFoundError, OSError):
        pass
    if icon.isNull():
        for size in (16, 32, 48, 64, 128, 256):
            icon.addPixmap(_plain(size))
    return icon


def _plain(size: int) -> QPixmap:
    px = QPixmap(size, size)
    px.fill(Qt.GlobalColor.transparent)
    p = QPainter(px)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    _mark(p, size, HEALTHY)
    p.end()
    return px

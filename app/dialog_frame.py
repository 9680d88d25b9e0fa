"""What a window manager offers on a dialog's frame: a title and a close button, no maximise.

Qt turns a dialog's window flags (no minimise/maximise hint) into Motif hints, which KWin,
Mutter and xfwm4 follow. openbox does not: it ignores the Motif iconify and maximize
functions ("dont let mwm hints kill any buttons", openbox/client.c) and takes maximise away
only from a window it cannot resize (minimum size = maximum size). It then refuses to
maximise it (the button does nothing), though it still draws the button where hiding it would
move the buttons beside it (openbox/frame.c), and keeps minimise for every normal or dialog window.
So a dialog that must not be maximised has a fixed size, fixed before its window is mapped:
openbox reads a later WM_NORMAL_HINTS change into its allowed actions but does not lay out
the title bar again (openbox/event.c).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QLayout

DIALOG_FLAGS = (Qt.WindowType.Dialog | Qt.WindowType.CustomizeWindowHint | Qt.WindowType.WindowTitleHint
                | Qt.WindowType.WindowCloseButtonHint)


def fixed_dialog(dialog: QDialog) -> None:
    """Give ``dialog`` (its layout already filled) a title and close button only, and the fixed
    size of its contents, growing with them (a disclosed text, an error line), before it is shown."""
    dialog.setWindowFlags(DIALOG_FLAGS)
    layout = dialog.layout()
    assert layout is not None, "fixed_dialog needs the dialog's layout"
    layout.setSizeConstraint(QLayout.SizeConstraint.SetFixedSize)
    dialog.ensurePolished()
    layout.activate()

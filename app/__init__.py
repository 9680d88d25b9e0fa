"""The Qt tray app: hosts OMEN and Glyph, shows their state, asks the user for consent."""

#!/bin/sh
# Install this OMEN Local folder for the current user (no root): the programs under
# ~/.local/lib/omen-local, `omen`, `glyph`, `rune` (and `omen-app`) in ~/.local/bin, the
# menu entry and icons under ~/.local/share. Run it from the unpacked tarball:
#     ./install.sh            install or update
#     ./install.sh --remove   uninstall (your config and data stay)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${PREFIX:-"$HOME/.local"}
DATA=${XDG_DATA_HOME:-"$HOME/.local/share"}
LIB="$PREFIX/lib/omen-local"
BIN="$PREFIX/bin"

if [ "${1:-}" = "--remove" ]; then
    for p in omen glyph rune omen-app; do
        [ -L "$BIN/$p" ] && rm -f "$BIN/$p"
    done
    rm -rf "$LIB"
    rm -f "$DATA/applications/omen-local.desktop"
    find "$DATA/icons/hicolor" -name 'omen-local.*' -delete 2>/dev/null || true
    echo "removed OMEN Local (config and data are kept: ~/.config/omen-local, ~/.local/share/omen-local)"
    exit 0
fi

mkdir -p "$LIB" "$BIN" "$DATA/applications"
# Copy the programs (everything but the desktop integration) into place.
rm -rf "$LIB.new"
mkdir -p "$LIB.new"
cp -a "$HERE/_internal" "$LIB.new/"
for p in omen glyph rune omen-app; do
    [ -f "$HERE/$p" ] && cp -a "$HERE/$p" "$LIB.new/"
done
rm -rf "$LIB" && mv "$LIB.new" "$LIB"
for p in omen glyph rune omen-app; do
    [ -f "$LIB/$p" ] && ln -sf "$LIB/$p" "$BIN/$p"
done
if [ -f "$LIB/omen-app" ]; then
    sed "s|^Exec=.*|Exec=$LIB/omen-app|; s|^TryExec=.*|TryExec=$LIB/omen-app|" \
        "$HERE/share/applications/omen-local.desktop" > "$DATA/applications/omen-local.desktop"
fi
cp -a "$HERE/share/icons" "$DATA/"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$DATA/applications" || true
echo "installed OMEN Local in $LIB; programs linked in $BIN"
case ":$PATH:" in *":$BIN:"*) ;; *) echo "note: add $BIN to your PATH";; esac
echo "next: omen doctor   (then: omen serve, or omen-app for the tray)"

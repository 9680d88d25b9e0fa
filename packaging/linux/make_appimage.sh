#!/bin/sh
# Lay out an AppDir around the PyInstaller folder and, when appimagetool is installed,
# turn it into OMEN_Local-<arch>.AppImage.
#     sh packaging/linux/make_appimage.sh dist/omen-local dist
# appimagetool is not in Debian's or PyPI's archives: install it from the AppImage project's
# releases (CI does), or put it on PATH / in $APPIMAGETOOL. Without it the AppDir is left
# ready for it and the script says so. The last line of output is what was made.
set -eu
BUNDLE=${1:?usage: make_appimage.sh BUNDLE_DIR OUT_DIR}
OUT=${2:?usage: make_appimage.sh BUNDLE_DIR OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ARCH=${ARCH:-$(uname -m)}
APPDIR="$OUT/OMEN_Local.AppDir"

rm -rf "$APPDIR"
mkdir -p "$APPDIR/usr/lib" "$APPDIR/usr/share/applications"
# Hard links when the file system allows: the AppDir costs no space next to the bundle.
cp -al "$BUNDLE" "$APPDIR/usr/lib/omen-local" 2>/dev/null || cp -a "$BUNDLE" "$APPDIR/usr/lib/omen-local"
rm -rf "$APPDIR/usr/lib/omen-local/share" "$APPDIR/usr/lib/omen-local/install.sh"
cp "$HERE/AppRun" "$APPDIR/AppRun"
chmod +x "$APPDIR/AppRun"
cp "$HERE/omen-local.desktop" "$APPDIR/omen-local.desktop"
cp "$HERE/omen-local.desktop" "$APPDIR/usr/share/applications/omen-local.desktop"
for png in "$ROOT"/resources/icons/omen-*.png; do
    size=$(basename "$png" .png | cut -d- -f2)
    mkdir -p "$APPDIR/usr/share/icons/hicolor/${size}x${size}/apps"
    cp "$png" "$APPDIR/usr/share/icons/hicolor/${size}x${size}/apps/omen-local.png"
done
mkdir -p "$APPDIR/usr/share/icons/hicolor/scalable/apps"
cp "$ROOT/resources/icons/omen.svg" "$APPDIR/usr/share/icons/hicolor/scalable/apps/omen-local.svg"
cp "$ROOT/resources/icons/omen-256.png" "$APPDIR/omen-local.png"
ln -sf omen-local.png "$APPDIR/.DirIcon"

TOOL=${APPIMAGETOOL:-$(command -v appimagetool || command -v appimagetool-"$ARCH".AppImage || true)}
if [ -z "$TOOL" ]; then
    echo "appimagetool not found: AppDir ready at $APPDIR (run: ARCH=$ARCH appimagetool $APPDIR)" >&2
    echo "AppDir $APPDIR (no appimagetool here)"
    exit 0
fi
IMAGE="$OUT/OMEN_Local-$ARCH.AppImage"
# --appimage-extract-and-run: CI runners have no FUSE.
ARCH=$ARCH "$TOOL" --appimage-extract-and-run "$APPDIR" "$IMAGE" >&2 2>&1 \
    || ARCH=$ARCH "$TOOL" "$APPDIR" "$IMAGE" >&2
echo "AppImage $IMAGE"

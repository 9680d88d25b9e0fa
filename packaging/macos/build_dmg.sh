#!/usr/bin/env bash
# Build "OMEN Local.app" (menu-bar only), sign it, wrap it in a dmg, notarise and staple.
#
#     bash packaging/macos/build_dmg.sh
#
# Run on macOS from the repository root, with the [app,packaging] extras installed.
# Signing and notarisation happen when their settings are in the environment:
#   CODESIGN_IDENTITY   "Developer ID Application: Name (TEAMID)" in the keychain;
#                       without it everything is signed ad hoc ("-"), which runs on this Mac only
#   NOTARY_PROFILE      a notarytool keychain profile (xcrun notarytool store-credentials), or
#   APPLE_ID, APPLE_TEAM_ID, APPLE_APP_PASSWORD   the same as three variables (CI secrets)
# Output: dist/OMEN-Local-<version>-macos-<arch>.dmg
set -euo pipefail
cd "$(dirname "$0")/../.."

APP_NAME="OMEN Local"
VERSION=$(python3 -c 'import re; print(re.search(r"__version__ = \"([^\"]+)\"", open("omen_local/__init__.py").read())[1])')
ARCH=$(uname -m)
DIST=dist
APP="$DIST/$APP_NAME.app"
DMG="$DIST/OMEN-Local-$VERSION-macos-$ARCH.dmg"
IDENTITY=${CODESIGN_IDENTITY:--}
ENTITLEMENTS=packaging/macos/entitlements.plist

# 1. The .icns icon from the PNGs (iconutil ships with macOS).
ICONSET=$(mktemp -d)/omen.iconset
mkdir -p "$ICONSET"
for size in 16 32 128 256 512; do
    sips -z $size $size resources/icons/omen-512.png --out "$ICONSET/icon_${size}x${size}.png" >/dev/null
    double=$((size * 2))
    if [ $double -le 512 ]; then
        sips -z $double $double resources/icons/omen-512.png --out "$ICONSET/icon_${size}x${size}@2x.png" >/dev/null
    fi
done
iconutil -c icns "$ICONSET" -o resources/icons/omen.icns

# 2. The bundle: the spec wraps the folder as OMEN Local.app (LSUIElement: no Dock icon).
python3 -m PyInstaller --noconfirm --clean --distpath "$DIST" --workpath build packaging/pyinstaller/omen.spec
if [ -d "$APP" ]; then
    TARGET=$APP
    /usr/libexec/PlistBuddy -c "Print :LSUIElement" "$APP/Contents/Info.plist" | grep -q true
else
    # No tray app yet (app.main): the spec makes no .app; ship the console programs' folder.
    echo "no $APP (the tray app is not built): the dmg holds the omen-local folder" >&2
    TARGET="$DIST/omen-local"
fi

# 3. Sign inside out: every Mach-O file, then the app. Hardened runtime (required for
#    notarisation) with the entitlements CPython needs (ctypes/cffi closures).
sign() {
    codesign --force --timestamp --options runtime --entitlements "$ENTITLEMENTS" --sign "$IDENTITY" "$@"
}
if [ "$IDENTITY" = "-" ]; then
    sign() { codesign --force --sign - "$@"; }
    echo "CODESIGN_IDENTITY is not set: signing ad hoc (runs on this Mac only; no notarisation)" >&2
fi
while IFS= read -r -d '' file; do
    if file -b "$file" | grep -q "Mach-O"; then sign "$file"; fi
done < <(find "$TARGET" -type f \( -perm -u+x -o -name "*.so" -o -name "*.dylib" \) -print0)
if [ "$TARGET" = "$APP" ]; then
    sign "$APP"
    codesign --verify --deep --strict --verbose=2 "$APP"
fi

# 4. The dmg: the app and a link to /Applications to drag it onto.
STAGE=$(mktemp -d)
cp -R "$TARGET" "$STAGE/"
if [ "$TARGET" = "$APP" ]; then ln -s /Applications "$STAGE/Applications"; fi
rm -f "$DMG"
hdiutil create -volname "$APP_NAME" -srcfolder "$STAGE" -fs HFS+ -format UDZO -ov "$DMG"
if [ "$IDENTITY" != "-" ]; then codesign --force --timestamp --sign "$IDENTITY" "$DMG"; fi

# 5. Notarise and staple (Developer ID only).
if [ "$IDENTITY" != "-" ]; then
    if [ -n "${NOTARY_PROFILE:-}" ]; then
        xcrun notarytool submit "$DMG" --keychain-profile "$NOTARY_PROFILE" --wait
    elif [ -n "${APPLE_ID:-}" ]; then
        xcrun notarytool submit "$DMG" --apple-id "$APPLE_ID" --team-id "$APPLE_TEAM_ID" \
            --password "$APPLE_APP_PASSWORD" --wait
    else
        echo "no NOTARY_PROFILE or APPLE_ID: the dmg is signed but not notarised" >&2
        echo "$DMG"
        exit 0
    fi
    xcrun stapler staple "$DMG"
    xcrun stapler validate "$DMG"
    spctl --assess --type open --context context:primary-signature --verbose=2 "$DMG"
fi
echo "$DMG"

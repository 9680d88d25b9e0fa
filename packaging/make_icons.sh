#!/bin/sh
# Render resources/icons/omen.svg to the PNG sizes and the Windows .ico that are committed.
# Needs rsvg-convert (apt: librsvg2-bin) and ImageMagick's convert. macOS's .icns is made
# at build time by packaging/macos/build_dmg.sh (iconutil).
set -eu
cd "$(dirname "$0")/../resources/icons"
for s in 16 24 32 48 64 128 256 512; do
    rsvg-convert -w $s -h $s omen.svg -o omen-$s.png
done
convert omen-16.png omen-24.png omen-32.png omen-48.png omen-64.png omen-128.png omen-256.png omen.ico

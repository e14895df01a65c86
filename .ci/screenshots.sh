#!/usr/bin/env bash
# Takes the README's screenshots of the explorer under Xvfb with software Vulkan (lavapipe):
# launch with a model and a photo, select another class, show a head, open the comparison.
# Usage: .ci/screenshots.sh MODEL IMAGE [OUT_DIR]   (needs xvfb, xdotool, imagemagick)
set -euo pipefail
model=$1
image=$2
out=${3:-assets/screenshots}
mkdir -p "$out"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 0700 "$XDG_RUNTIME_DIR"
export DISPLAY=:77
Xvfb "$DISPLAY" -screen 0 1600x1000x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $app $xvfb 2>/dev/null || true' EXIT
sleep 1
bin=${BIN:-target/release/intr-explorer}
"$bin" "$model" "$image" &
app=$!
shot() { sleep "$1"; /usr/bin/import -window root "$out/$2.png"; echo "wrote $out/$2.png"; }
win() { xdotool search --sync --name "INTR Explorer" | head -1; }
w=$(win)
xdotool windowmove "$w" 0 0 windowsize "$w" 1600 1000
shot 25 1-ranking-and-heads
xdotool windowfocus "$w"; xdotool key Down key Down
shot 2 2-another-class
xdotool key 3
shot 2 3-head-3
# Add the two top classes to the comparison (the + buttons of the first two ranking rows).
read -r wx wy < <(xdotool getwindowgeometry "$w" | awk '/Position/ {split($2, p, ","); print p[1], p[2]}')
# The defaults fit the demo model's ranking; the pointer rests a moment before each click so the
# window has seen it arrive.
plus() { xdotool mousemove "$1" "$2"; sleep 0.5; xdotool click 1; sleep 0.5; }
plus $((wx + ${PLUS_X:-1287})) $((wy + ${PLUS_Y1:-97}))
plus $((wx + ${PLUS_X:-1287})) $((wy + ${PLUS_Y2:-143}))
shot 2 4-compare

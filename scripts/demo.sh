#!/usr/bin/env bash
# The main job on a sample image: builds a small ext4 image from this
# repository's own sources with mke2fs, then inspects and checks it with
# ext4-image (no mount, no root needed for these steps).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
out=${1:-target/sample.img}
mkdir -p "$(dirname "$out")"
cargo build --release -q -p ext4-image
mke2fs -q -F -t ext4 -O metadata_csum,64bit -L sample -d engine "$out" 16M
img=target/release/ext4-image
$img "$out" info
$img "$out" ls -l /src
$img "$out" stat /src/lib.rs
$img "$out" check --data
echo "sample image: $out"

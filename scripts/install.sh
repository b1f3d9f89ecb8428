#!/usr/bin/env bash
# Install the programs and put the helpers where mount(8) and systemd look:
#   cargo install --path frontend-linux --root /usr/local   (ext4-fuse, ext4-fuse-mount)
#   cargo install --path frontend-bsd   --root /usr/local   (ext4-fuse-bsd)
#   cargo install --path frontend-image --root /usr/local   (ext4-image)
# then, as root:
#   /sbin/mount.fuse.ext4-fuse -> /usr/local/bin/ext4-fuse-mount
#     (mount(8) runs it for fstab lines and -t fuse.ext4-fuse; it finds
#     ext4-fuse beside its target)
#   /etc/systemd/system/ext4-fuse@.service (runs /usr/local/bin/ext4-fuse-mount)
# PREFIX (default /usr/local) and DESTDIR are honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
dest=${DESTDIR:-}
for crate in frontend-linux frontend-bsd frontend-image; do
  cargo install --locked --quiet --path "$crate" --root "$dest$prefix"
done
rm -f "$dest$prefix/.crates.toml" "$dest$prefix/.crates2.json"
install -d "$dest/sbin" "$dest/etc/systemd/system"
ln -sf "$prefix/bin/ext4-fuse-mount" "$dest/sbin/mount.fuse.ext4-fuse"
sed "s|/usr/local/bin/ext4-fuse-mount|$prefix/bin/ext4-fuse-mount|" \
  frontend-linux/systemd/ext4-fuse@.service > "$dest/etc/systemd/system/ext4-fuse@.service"
echo "installed: $prefix/bin/{ext4-fuse,ext4-fuse-mount,ext4-fuse-bsd,ext4-image}, /sbin/mount.fuse.ext4-fuse, /etc/systemd/system/ext4-fuse@.service"

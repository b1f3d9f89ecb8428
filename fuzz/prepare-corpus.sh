#!/usr/bin/env bash
# Fill fuzz/corpus/<target>/ from the checked-in seeds (gunzipped), plus a
# few small images of the e2fsprogs corpus when it is present.
#   fuzz/prepare-corpus.sh target...
set -euo pipefail
cd "$(dirname "$0")"
extra=(f_dirlink f_extent_bad_node f_ea_inode_self_ref f_holedir f_baddir2 f_messy_inode
    f_extents2 f_valid_ea_in_inode f_toobig_extent_dir f_big_sparse f_fast_symlink_extents
    f_inlinedir_bad_symlink f_badsymlinks f_zeroed_ext_header f_h_badroot f_dupdot f_filetype)
shared=/work/shared/corpus/e2fsprogs
for t in "$@"; do
    mkdir -p "corpus/$t"
    for f in "seeds/$t"/*.img.gz; do
        out="corpus/$t/$(basename "$f" .gz)"
        [ -e "$out" ] || gzip -dc "$f" >"$out"
    done
    case $t in walk | open | blockmap | dir | symlink | xattr)
        if [ -d "$shared" ]; then
            for n in "${extra[@]}"; do
                src="$shared/$n.img.gz"
                out="corpus/$t/corpus_$n.img"
                if [ -e "$src" ] && [ ! -e "$out" ]; then
                    gzip -dc "$src" >"$out"
                    # Only small ones: big inputs slow every execution.
                    [ "$(stat -c %s "$out")" -le 2097152 ] || rm -f "$out"
                fi
            done
        fi
        ;;
    esac
done

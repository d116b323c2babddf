#!/usr/bin/env bash
# Builds hearth-agent as the static binary the guest runs (explicit --target,
# crt-static; glibc, as only the gnu target exists here). Prints its path.
# Its own target dir keeps the crt-static flags away from host builds.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${HEARTH_AGENT_PROFILE:-release}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/agent"
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
export LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu
# Stripped: it goes into every guest's initramfs (26 MB unstripped).
export CARGO_PROFILE_RELEASE_STRIP=symbols
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build --quiet -p hearth-agent --target x86_64-unknown-linux-gnu --target-dir "$target_dir" "${flag[@]}" >&2
bin="$target_dir/x86_64-unknown-linux-gnu/$profile/hearth-agent"
if ! file -L "$bin" | grep -q 'statically linked\|static-pie linked'; then
    echo "build-agent: $bin is not static: $(file -L "$bin")" >&2
    exit 1
fi
echo "$bin"

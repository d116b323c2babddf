#!/usr/bin/env bash
# Installs the Debian packages Hearth builds and tests with. Idempotent;
# needs root and the Debian package registry. Called by setup.sh and test.sh.
set -euo pipefail
packages=(
    protobuf-compiler      # the CRI and agent protocols are generated at build time
    libseccomp-dev         # static libseccomp for the guest agent
    file                   # checks that the agent is static
    e2fsprogs              # mkfs.ext4 for the scratch disk template
    erofs-utils            # mkfs.erofs for image block devices
    util-linux             # losetup, nsenter, mount
    iproute2               # ip, tc (tests inspect what the code made)
    busybox-static         # test images and guest tools
    containernetworking-plugins  # CNI plugins for pod networking
    docker-registry        # a real OCI registry on 127.0.0.1 for the image tests
    skopeo                 # pushes test images to it
    cpio                   # tests read the initramfs back with an independent tool
    containerd             # the reference CRI runtime the tests compare behaviour with
    iptables               # the CNI portmap plugin
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# QEMU for the qemu backend: the image ships qemu-utils 10 from
# bookworm-backports, which conflicts with bookworm's qemu-system-x86 7.2,
# so QEMU comes from the same suite of the machine's own Debian archive.
if ! command -v qemu-system-x86_64 >/dev/null; then
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
        [ -n "$uri" ] || { echo "install-deps: no Debian archive configured for bookworm-backports" >&2; exit 1; }
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$uri" > /etc/apt/sources.list.d/hearth-bookworm-backports.sources
    fi
    echo "install-deps: installing qemu-system-x86 from bookworm-backports" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
fi

# vhost-device-vsock (rust-vmm) gives QEMU guests the hybrid-vsock channel.
if ! command -v vhost-device-vsock >/dev/null && [ ! -x "$HOME/.cargo/bin/vhost-device-vsock" ]; then
    echo "install-deps: cargo install vhost-device-vsock (a few minutes)" >&2
    cargo install --quiet --locked vhost-device-vsock --version 0.3.0
fi


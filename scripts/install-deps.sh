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

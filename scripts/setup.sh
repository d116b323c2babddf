#!/usr/bin/env bash
# Sets up Hearth on this machine and runs the demo: installs the Debian
# packages it needs, builds hearthd, hearthctl and the static agent, starts
# a local registry (Debian's docker-registry on 127.0.0.1) holding a busybox
# image built here from busybox-static, starts hearthd on a private socket
# and runs the Kubernetes Pod in examples/demo-pod.yaml through the CRI with
# `hearthctl run --rm` (two containers sharing an emptyDir, a secret).
# Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
echo "== building hearthd and hearthctl"
cargo build --quiet --release -p hearthd -p hearthctl
agent="$(bash scripts/build-agent.sh)"
bin=target/release
echo "== building the guest bundle (Debian's cloud kernel + an initramfs with the agent)"
"$bin/hearthctl" guest build --work-dir /var/lib/hearth/guest --agent "$agent"

demo=$(mktemp -d /tmp/hearth-demo.XXXXXX)
cat > "$demo/config.toml" <<TOML
address = "$demo/hearth.sock"
root = "$demo/root"
state = "$demo/state"
default_runtime_handler = "namespaces"
[namespaces]
agent_binary = "$agent"
[network]
netns_dir = "$demo/netns"
cni_conf_dir = "$demo/cni"
cni_bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
[scratch]
size_mib = 1024
[timeouts]
boot_ms = 60000
TOML
# The demo pod's network: a bridge with host-local addresses.
mkdir -p "$demo/cni"
cat > "$demo/cni/10-hearth-demo.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "hearth-demo", "plugins": [
  {"type": "bridge", "bridge": "hearth-demo0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]], "dataDir": "$demo/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
# A registry on 127.0.0.1 (plain HTTP: hearthd allows it for loopback).
port=5000
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
cat > "$demo/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $demo/registry
http:
  addr: 127.0.0.1:$port
YAML
/usr/bin/docker-registry serve "$demo/registry.yml" > "$demo/registry.log" 2>&1 &
registry=$!
"$bin/hearthd" --config "$demo/config.toml" 2> "$demo/hearthd.log" &
hearthd=$!
cleanup() {
    kill "$hearthd" "$registry" 2>/dev/null || true
    wait "$hearthd" "$registry" 2>/dev/null || true
    umount -l "$demo/netns" 2>/dev/null || true
    ip link del hearth-demo0 2>/dev/null || true
}
trap cleanup EXIT

# A one-layer OCI image: Debian's static busybox and the applets the demo
# calls, written as an OCI layout by hand and pushed with skopeo.
busybox_image() {
    local dir="$1" root="$1/rootfs"
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$dir/blobs/sha256"
    cp /bin/busybox "$root/bin/busybox"
    for applet in sh cat echo sleep ls id mkdir; do ln -s busybox "$root/bin/$applet"; done
    printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n' > "$root/etc/passwd"
    printf 'root:x:0:\nuser:x:1000:\n' > "$root/etc/group"
    chmod 1777 "$root/tmp"
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$dir/layer.tar" .
    local diff_id layer layer_size config config_size manifest manifest_size
    diff_id=$(sha256sum < "$dir/layer.tar" | cut -d' ' -f1)
    gzip -n -f "$dir/layer.tar"
    layer=$(sha256sum < "$dir/layer.tar.gz" | cut -d' ' -f1)
    layer_size=$(stat -c %s "$dir/layer.tar.gz")
    mv "$dir/layer.tar.gz" "$dir/blobs/sha256/$layer"
    printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$diff_id" > "$dir/config.json"
    config=$(sha256sum < "$dir/config.json" | cut -d' ' -f1)
    config_size=$(stat -c %s "$dir/config.json")
    mv "$dir/config.json" "$dir/blobs/sha256/$config"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
        "$config" "$config_size" "$layer" "$layer_size" > "$dir/manifest.json"
    manifest=$(sha256sum < "$dir/manifest.json" | cut -d' ' -f1)
    manifest_size=$(stat -c %s "$dir/manifest.json")
    mv "$dir/manifest.json" "$dir/blobs/sha256/$manifest"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"demo"}}]}' \
        "$manifest" "$manifest_size" > "$dir/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' > "$dir/oci-layout"
}
echo "== building a busybox image and pushing it to the registry on 127.0.0.1:$port"
busybox_image "$demo/image"
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
    "oci:$demo/image:demo" "docker://127.0.0.1:$port/hearth/busybox:demo"
manifest=examples/demo-pod.yaml
if [ "$port" != 5000 ]; then
    manifest="$demo/demo-pod.yaml"
    sed "s#127.0.0.1:5000/#127.0.0.1:$port/#" examples/demo-pod.yaml > "$manifest"
fi

export HEARTH_ADDRESS="$demo/hearth.sock"
for _ in $(seq 100); do [ -S "$HEARTH_ADDRESS" ] && break; sleep 0.1; done

ctl() { echo "\$ hearthctl $*"; "$bin/hearthctl" "$@"; }
ctl version
ctl info
# The demo pod runs in a real VM where one can boot (the qemu handler:
# KVM, or TCG software emulation, slower), else in namespaces.
handler=qemu
if ! ctl --timeout 90s run "$manifest" --rm --runtime qemu; then
    echo "(the pod could not run on the qemu handler here; the demo uses the namespaces handler)"
    handler=namespaces
    ctl run "$manifest" --rm --runtime namespaces
fi
ctl pods
echo "demo done (handler $handler); hearthd's log is $demo/hearthd.log"

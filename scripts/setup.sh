#!/usr/bin/env bash
# Sets up Hearth on this machine and runs the demo: installs the Debian
# packages it needs, builds hearthd, hearthctl and the static agent, starts
# hearthd on a private socket and runs a demo pod sandbox through the CRI
# (run, inspect, list, stop, remove). Needs root.
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
"$bin/hearthd" --config "$demo/config.toml" 2> "$demo/hearthd.log" &
hearthd=$!
cleanup() {
    kill "$hearthd" 2>/dev/null || true
    wait "$hearthd" 2>/dev/null || true
    umount -l "$demo/netns" 2>/dev/null || true
    ip link del hearth-demo0 2>/dev/null || true
}
trap cleanup EXIT
export HEARTH_ADDRESS="$demo/hearth.sock"
for _ in $(seq 100); do [ -S "$HEARTH_ADDRESS" ] && break; sleep 0.1; done

ctl() { echo "\$ hearthctl $*"; "$bin/hearthctl" "$@"; }
ctl version
ctl info
# The demo pod runs in a real VM where one can boot (the qemu handler:
# KVM, or TCG software emulation, slower), else in namespaces.
handler=qemu
echo "\$ hearthctl --timeout 90s runp examples/pod.yaml --runtime qemu"
if ! pod=$("$bin/hearthctl" --timeout 90s runp examples/pod.yaml --runtime qemu); then
    echo "(the qemu handler cannot run here; the demo uses the namespaces handler)"
    handler=namespaces
    echo "\$ hearthctl runp examples/pod.yaml --runtime namespaces"
    pod=$("$bin/hearthctl" runp examples/pod.yaml --runtime namespaces)
fi
echo "$pod"
ctl pods
ctl inspectp "${pod:0:12}"
ctl stopp "${pod:0:12}"
ctl pods
ctl rmp "${pod:0:12}"
ctl pods
echo "demo done (handler $handler); hearthd's log is $demo/hearthd.log"

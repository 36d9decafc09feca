#!/usr/bin/env bash
# A Slurm cluster of several nodes on this one machine, each node a set of Linux namespaces,
# for the multi-node tests and for trying multi-node jobs without a cluster.
#
#   slurm/namespace_cluster.sh start          build the nodes and their network, start munged and
#                                             slurmd on every node and slurmctld on node1, wait
#                                             until every node is idle
#   slurm/namespace_cluster.sh stop           end every process of the cluster and delete its
#                                             namespaces (also what a crashed run left behind)
#   slurm/namespace_cluster.sh status         the nodes, their daemons, and sinfo
#   slurm/namespace_cluster.sh on NODE CMD..  run CMD on NODE (its network, hostname, mounts; with
#                                             SLURM_CONF set): `on node1 sbatch ...`
#   slurm/namespace_cluster.sh crash NODE     the node dies: its link goes down, then every
#                                             process on it is killed (SIGKILL)
#   slurm/namespace_cluster.sh boot NODE      a crashed node comes back: munged and slurmd start
#                                             again (and slurmctld on node1)
#
# A node is
#   - a network namespace `sambay-TAG-nodeI`, with loopback and eth0 = SUBNET.I/24, plugged into
#     a bridge that lives in a namespace of its own, `sambay-TAG-switch`. Nothing is created in
#     the host's network namespace: no interface, address or route of the host changes, and the
#     nodes can reach each other and nothing else (no uplink, no default route);
#   - a UTS namespace with hostname nodeI, and a mount namespace (private propagation: nothing
#     mounted there is seen by the host) in which /etc/hosts is the cluster's host table, and
#     /tmp, /dev/shm, /run/munge, /var/lib/munge and /var/log/munge are the node's own;
#   - a "keeper" process that holds the UTS and mount namespaces (pids/nodeI.keeper.pid); every
#     daemon of the node is started inside its namespaces with nsenter.
# Everything else is shared as on a cluster with a shared file system: the same files (the
# repository, run directories), users, kernel and CPUs. Node-local /tmp matters: Slurm's PMIx
# plugin, for one, makes a directory named after the job step in /tmp on every node, and two
# nodes that share /tmp collide there. Directories under /tmp that the nodes must share (the
# state directory, run directories) are bound back into each node's /tmp at the same path.
#
# Settings (environment, read by `start` and kept in $SAMBAY_NS_DIR/cluster.env for the other
# commands): SAMBAY_NS_DIR (state directory, default /tmp/sambay-nscluster: slurm.conf, hosts,
# log/, pids/, nodes/NODE/), SAMBAY_NS_TAG (names the namespaces, default nsc), SAMBAY_NS_NODES
# (default 2), SAMBAY_NS_CPUS (CPUs each node claims, default 2), SAMBAY_NS_SUBNET (first three
# octets of the private /24, default 10.213.7), SAMBAY_NS_SLURMD_TIMEOUT (seconds without an
# answer before slurmctld declares a node down, default 20), SAMBAY_NS_SHARED (directories
# under /tmp that every node sees, colon-separated; the state directory always is). Needs root,
# iproute2 and util-linux.
set -euo pipefail

me=namespace_cluster
self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
state=$(realpath -m "${SAMBAY_NS_DIR:-/tmp/sambay-nscluster}")
source "$(dirname "$self")/cluster_lib.sh"

if [ -f "$state/cluster.env" ] && [ "${1:-}" != start ]; then
  source "$state/cluster.env"
else
  tag=${SAMBAY_NS_TAG:-nsc}
  nodes=${SAMBAY_NS_NODES:-2}
  cpus=${SAMBAY_NS_CPUS:-2}
  subnet=${SAMBAY_NS_SUBNET:-10.213.7}
  slurmd_timeout=${SAMBAY_NS_SLURMD_TIMEOUT:-20}
  shared=${SAMBAY_NS_SHARED:-}
fi
conf=$state/slurm.conf
switch=sambay-$tag-switch
controller=node1

netns_of() { echo "sambay-$tag-$1"; }
node_names() { for ((i = 1; i <= nodes; i++)); do echo "node$i"; done; }
node_index() {  # nodeI -> I, or fails
  [[ $1 =~ ^node([0-9]+)$ ]] && ((BASH_REMATCH[1] >= 1 && BASH_REMATCH[1] <= nodes)) ||
    die "no node '$1' in this cluster (nodes: $(node_names | tr '\n' ' '))"
  echo "${BASH_REMATCH[1]}"
}

check_settings() {
  [[ $tag =~ ^[a-z0-9]{1,16}$ ]] || die "SAMBAY_NS_TAG='$tag': want 1-16 lowercase letters or digits"
  [[ $nodes =~ ^[0-9]+$ ]] && ((nodes >= 2 && nodes <= 64)) ||
    die "SAMBAY_NS_NODES='$nodes': want a number of nodes from 2 to 64"
  [[ $cpus =~ ^[0-9]+$ ]] && ((cpus >= 1)) || die "SAMBAY_NS_CPUS='$cpus': want a number >= 1"
  [[ $slurmd_timeout =~ ^[0-9]+$ ]] && ((slurmd_timeout >= 5)) ||
    die "SAMBAY_NS_SLURMD_TIMEOUT='$slurmd_timeout': want seconds >= 5"
  local o
  IFS=. read -r -a o <<<"$subnet"
  { ((${#o[@]} == 3)) && [[ ${o[0]}${o[1]}${o[2]} =~ ^[0-9]+$ ]] && ((o[1] < 256 && o[2] < 256)) &&
    { ((o[0] == 10)) || { ((o[0] == 172)) && ((o[1] >= 16 && o[1] < 32)); } ||
      { ((o[0] == 192)) && ((o[1] == 168)); }; }; } ||
    die "SAMBAY_NS_SUBNET='$subnet': want the first three octets of a private /24 (10.x.y, 172.16-31.y, 192.168.y)"
}

need_root_tools() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network, UTS and mount namespaces; the Slurm daemons)"
  local t
  for t in ip nsenter unshare setpriv; do
    command -v "$t" >/dev/null || die "'$t' not found (packages iproute2, util-linux)"
  done
}

keeper_pid() { live_pid "$1.keeper" sleep; }

# Runs a command on a node: inside its network, UTS and mount namespaces, in the caller's
# working directory, with the cluster's SLURM_CONF.
on_node() {  # node command...
  local node=$1 k
  shift
  [ -f "$state/cluster.env" ] || die "no cluster in $state (start one, or set SAMBAY_NS_DIR)"
  node_index "$node" >/dev/null
  k=$(keeper_pid "$node") || die "$node is not running (crashed or stopped; '$0 boot $node')"
  SLURM_CONF=$conf nsenter -t "$k" --net --uts --mount --wd="$PWD" -- "$@"
}

# The first process of a node, started by `start`/`boot` inside fresh UTS and mount namespaces
# (and the node's network namespace): names the node, mounts its private files, then holds the
# namespaces for the node's daemons by sleeping.
node_init() {  # node, host's mount namespace, host's UTS namespace
  local node=$1 dir=$state/nodes/$1
  # Never mount over the host's files: this must run in namespaces of its own.
  [ "$(readlink /proc/self/ns/mnt)" != "$2" ] && [ "$(readlink /proc/self/ns/uts)" != "$3" ] ||
    die "node-init $node: not in mount and UTS namespaces of its own; refusing to mount"
  hostname "$node"
  mount --bind "$state/hosts" /etc/hosts
  # Node-local /tmp: the node's directory, with the shared directories bound in at their paths
  # (bound into it before it covers /tmp, while their paths still lead to them).
  local d tmp=$dir/tmp
  for d in $(shared_tmp_dirs); do
    mkdir -p "$tmp${d#/tmp}"
    mount --bind "$d" "$tmp${d#/tmp}"
  done
  mount --rbind "$tmp" /tmp
  mount -t tmpfs -o mode=0755,size=4m tmpfs /run/munge
  chown munge:munge /run/munge
  mount --bind "$dir/munge-lib" /var/lib/munge
  mount --bind "$dir/munge-log" /var/log/munge
  mount -t tmpfs -o mode=1777 tmpfs /dev/shm
  # sysfs as seen from this network namespace (what `ip netns exec` does too).
  umount -l /sys && mount -t sysfs sysfs /sys
  exec sleep infinity
}

# The directories under /tmp that all nodes share: the state directory and SAMBAY_NS_SHARED,
# less those inside another one of them.
shared_tmp_dirs() {
  local d last=""
  { echo "$state"; tr ':' '\n' <<<"$shared"; } | grep '^/tmp/' | sort -u | while read -r d; do
    [ -n "$last" ] && [[ $d == "$last"/* ]] && continue
    echo "$d"
    last=$d
  done
}

node_idle() { [ "$(on_node "$controller" sinfo -h -n "$1" -o %t 2>/dev/null)" = idle ]; }
munge_answers() { on_node "$1" bash -c 'munge -n </dev/null | unmunge' >/dev/null 2>&1; }

# Network of one node: the namespace, loopback, and eth0 on the switch's bridge.
plug_node() {  # node
  local node=$1 i ns
  i=$(node_index "$node")
  ns=$(netns_of "$node")
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$switch" link add "v-$node" type veth peer name eth0 netns "$ns"
  ip -n "$switch" link set "v-$node" master br0 up
  ip -n "$ns" addr add "$subnet.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
}

# Starts a node's keeper and daemons (its network exists): munged, slurmctld on the controller
# node (with -i on the first start: no state from an earlier cluster), slurmd.
boot_node() {  # node, first start (1/0)
  local node=$1 first=$2 dir=$state/nodes/$1 k
  ip -n "$switch" link set "v-$node" up
  install -d -m 0755 "$dir" "$dir/spool"
  install -d -m 1777 "$dir/tmp"
  install -d -o munge -g munge -m 0700 "$dir/munge-lib" "$dir/munge-log"
  spawn "$node.keeper" nsenter --net="/run/netns/$(netns_of "$node")" -- \
    unshare --uts --mount --propagation private -- \
    env SAMBAY_NS_DIR="$state" bash "$self" node-init "$node" "$(readlink /proc/self/ns/mnt)" "$(readlink /proc/self/ns/uts)"
  wait_for 10 "$node to come up" keeper_pid "$node" ||
    { cat "$state/log/$node.keeper.stdout" >&2; die "$node did not come up"; }
  k=$(keeper_pid "$node")
  local enter=(nsenter -t "$k" --net --uts --mount --wd="$state" --)
  spawn "$node.munged" "${enter[@]}" setpriv --reuid=munge --regid=munge --init-groups \
    /usr/sbin/munged --foreground
  wait_for 10 "munged on $node" munge_answers "$node" ||
    { tail -n 15 "$dir/munge-log/munged.log" >&2 2>/dev/null; die "munged did not start on $node"; }
  if [ "$node" = "$controller" ] && ! live_pid slurmctld >/dev/null; then
    local flags=()
    ((first)) && flags=(-i)
    spawn slurmctld "${enter[@]}" /usr/sbin/slurmctld -D "${flags[@]}" -f "$conf"
    wait_for 20 "slurmctld to answer" on_node "$controller" scontrol ping ||
      { tail -n 15 "$state/log/slurmctld.log" >&2; die "slurmctld did not start (log: $state/log/slurmctld.log)"; }
  fi
  # What a step that died with the node left in its spool would stop the step from starting
  # again there (clean_stale_pmix.sh says why); a site runs this at boot too.
  "${enter[@]}" env SLURM_CONF="$conf" sh "$state/clean_stale_pmix.sh" "$node" ||
    die "clean_stale_pmix.sh failed on $node"
  spawn "$node.slurmd" "${enter[@]}" /usr/sbin/slurmd -D -f "$conf" -N "$node"
}

write_files() {
  mkdir -p "$state"/{log,pids,ctld,nodes}
  local d list=()
  # Shared directories by their real paths (the binds need them), each checked to exist.
  while read -r d; do
    [ -n "$d" ] || continue
    [ -d "$d" ] || die "SAMBAY_NS_SHARED: no directory $d"
    [ "$(realpath "$d")" != /tmp ] || die "SAMBAY_NS_SHARED: /tmp itself cannot be shared (nodes have their own)"
    list+=("$(realpath "$d")")
  done < <(tr ':' '\n' <<<"$shared")
  shared=$(IFS=:; echo "${list[*]}")
  printf 'tag=%q nodes=%q cpus=%q subnet=%q slurmd_timeout=%q shared=%q\n' "$tag" "$nodes" \
    "$cpus" "$subnet" "$slurmd_timeout" "$shared" >"$state/cluster.env"
  {
    echo "# The host table of the nodes of slurm/namespace_cluster.sh (bound over their /etc/hosts)."
    echo "127.0.0.1 localhost"
    echo "::1 localhost ip6-localhost ip6-loopback"
    for ((i = 1; i <= nodes; i++)); do echo "$subnet.$i node$i"; done
  } >"$state/hosts"
  {
    cat <<EOF
# Written by slurm/namespace_cluster.sh: $nodes nodes in network namespaces on one machine.
ClusterName=sambay-ns
SlurmctldHost=$controller($subnet.1)
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$state/ctld
SlurmctldPidFile=$state/ctld/slurmctld.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdSpoolDir=$state/nodes/%n/spool
SlurmdPidFile=$state/nodes/%n/slurmd.pid
SlurmdLogFile=$state/log/slurmd-%n.log
# A node that stops answering is DOWN after this long, and its jobs are requeued.
SlurmdTimeout=$slurmd_timeout
EOF
    slurm_common_settings
    for ((i = 1; i <= nodes; i++)); do
      echo "NodeName=node$i NodeHostname=node$i NodeAddr=$subnet.$i CPUs=$cpus State=UNKNOWN"
    done
    echo "PartitionName=ns Nodes=node[1-$nodes] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
  } >"$conf"
  write_cgroup_conf "$state"
  # Run by every node at boot; copied to the state directory, which every node sees.
  install -m 0755 "$(dirname "$self")/clean_stale_pmix.sh" "$state/clean_stale_pmix.sh"
}

start() {
  need_root_tools
  check_settings
  install_packages slurm-wlm munge
  [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall munge)"
  # What an earlier run of this cluster left (crashed, or never stopped).
  teardown
  rm -rf "$state"/{ctld,nodes,pids,log}
  write_files
  # Mount points the nodes cover with their own; made as the munge package makes them, and only
  # where missing (the host's own are left as they are).
  [ -d /run/munge ] || install -d -o munge -g munge -m 0755 /run/munge
  local d
  for d in /var/lib/munge /var/log/munge; do [ -d "$d" ] || install -d -o munge -g munge -m 0700 "$d"; done
  ip netns add "$switch"
  ip -n "$switch" link add br0 type bridge
  ip -n "$switch" link set br0 up
  local node
  for node in $(node_names); do plug_node "$node"; done
  for node in $(node_names); do boot_node "$node" 1; done
  for node in $(node_names); do
    wait_for 40 "$node to become idle" node_idle "$node" || {
      tail -n 15 "$state/log/slurmd-$node.log" "$state/log/slurmctld.log" >&2 2>/dev/null
      on_node "$controller" sinfo -N -l >&2 || true
      die "$node did not come up idle (logs: $state/log/)"; }
  done
  log "up: $(on_node "$controller" sinfo -h -o '%D nodes (%N), %c CPUs each, %t') on $subnet.0/24 (state $state)"
}

# Ends every process of a namespace: TERM, up to 10 s, then KILL; returns once none is left.
empty_namespace() {  # netns name
  local pids
  pids=$(ip netns pids "$1" 2>/dev/null | tr '\n' ' ')
  [ -n "${pids// /}" ] || return 0
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    pids=$(ip netns pids "$1" 2>/dev/null | tr '\n' ' ')
    [ -n "${pids// /}" ] || return 0
    sleep 0.25
  done
  log "$1: processes $pids ignored TERM, killing"
  kill -KILL $pids 2>/dev/null || true
  wait_for 10 "the processes of $1 to end" bash -c "[ -z \"\$(ip netns pids $1)\" ]"
}

# Removes every namespace of this tag and everything in it. Idempotent; also cleans up after a
# run that crashed before `stop` (found by name: the state directory may be gone).
teardown() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^sambay-$tag-" || true); do
    empty_namespace "$ns" || true
    ip netns del "$ns" 2>/dev/null || log "could not delete network namespace $ns"
  done
  rm -f "$state"/pids/*.pid 2>/dev/null || true
}

stop() {
  need_root_tools
  # A clean shutdown first (slurmctld saves its state, every slurmd exits), then the recorded
  # daemons, then whatever else runs on a node (job steps), then the namespaces.
  if live_pid slurmctld >/dev/null && keeper_pid "$controller" >/dev/null; then
    on_node "$controller" scontrol shutdown >/dev/null 2>&1 || true
  fi
  local node
  for node in $(node_names); do end_daemon "$node.slurmd" slurmd; done
  end_daemon slurmctld
  for node in $(node_names); do end_daemon "$node.munged" munged; done
  teardown
  log "stopped (namespaces sambay-$tag-* removed)"
}

# A node dies: first it drops off the network (its peers see silence, not closed connections,
# as with a power loss or a kernel panic), then everything on it is killed at once.
crash() {  # node
  local node=$1 ns pids
  node_index "$node" >/dev/null
  ns=$(netns_of "$node")
  ip -n "$switch" link set "v-$node" down
  pids=$(ip netns pids "$ns" | tr '\n' ' ')
  [ -n "${pids// /}" ] && { kill -KILL $pids 2>/dev/null || true; }
  wait_for 10 "the processes of $node to end" bash -c "[ -z \"\$(ip netns pids $ns)\" ]" ||
    die "processes of $node survive SIGKILL: $(ip netns pids "$ns" | tr '\n' ' ')"
  rm -f "$state/pids/$node".*.pid
  [ "$node" = "$controller" ] && rm -f "$state/pids/slurmctld.pid"
  log "$node crashed: link down, killed ${pids:-nothing}"
}

# A crashed node reboots: /tmp (cleared at boot, as systemd's tmpfiles does), /run/munge and
# /dev/shm (tmpfs) start empty; the spool directory and logs persist as on a disk.
boot() {  # node
  local node=$1
  node_index "$node" >/dev/null
  keeper_pid "$node" >/dev/null && die "$node is running ('$0 crash $node' first)"
  [ -z "$(ip netns pids "$(netns_of "$node")")" ] || die "$node still has processes"
  # Only the host's view of the node's /tmp is removed: the shared directories are bound into
  # it in the node's own mount namespace, which ended with its last process.
  rm -rf "$state/nodes/$node/tmp"
  boot_node "$node" 0
  wait_for 40 "$node to become idle" node_idle "$node" ||
    die "$node did not come back idle (logs: $state/log/slurmd-$node.log, slurmctld.log)"
  log "$node is back"
}

status() {
  local node pid d
  for node in $(node_names); do
    if pid=$(keeper_pid "$node"); then
      local up=()
      for d in munged slurmd; do live_pid "$node.$d" "$d" >/dev/null && up+=("$d"); done
      [ "$node" = "$controller" ] && live_pid slurmctld >/dev/null && up+=(slurmctld)
      echo "$node: up ($(netns_of "$node"), $subnet.$(node_index "$node")): ${up[*]:-no daemons}"
    else
      echo "$node: down"
    fi
  done
  keeper_pid "$controller" >/dev/null && on_node "$controller" sinfo -N -o '%N %P %t %c' 2>/dev/null || true
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  on) [ $# -ge 3 ] || die "usage: $0 on NODE COMMAND..."; shift; on_node "$@" ;;
  crash) [ $# -eq 2 ] || die "usage: $0 crash NODE"; need_root_tools; crash "$2" ;;
  boot) [ $# -eq 2 ] || die "usage: $0 boot NODE"; need_root_tools; boot "$2" ;;
  node-init) shift; node_init "$@" ;;  # internal: the first process of a node
  *) echo "usage: $0 start|stop|status|on NODE CMD...|crash NODE|boot NODE" >&2; exit 2 ;;
esac

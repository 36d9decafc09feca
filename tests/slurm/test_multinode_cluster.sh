#!/usr/bin/env bash
# slurm/namespace_cluster.sh itself: two nodes come up idle, each with its own hostname, address,
# /etc/hosts view and /tmp, on a network that reaches nothing but the other node; the host's
# network, hostname and /etc/hosts are the same before, during and after; `srun -N2` runs on
# both nodes; a crashed node loses every process and comes back with `boot`; `start` over the
# leftovers of a run that was never stopped removes them; `stop` leaves no process, pid or
# namespace. Skipped (77) without root or network namespaces.
# usage: test_multinode_cluster.sh BUILD_DIR
build=$1
cluster=namespace
source "$(dirname "$0")/lib.sh"
ns=$repo/slurm/namespace_cluster.sh
on() { bash "$ns" on "$@"; }

host_view() {  # what of the host the cluster must not change
  ip -br addr; ip route; ip -6 route; hostname; md5sum </etc/hosts; readlink /proc/self/ns/net
}
host_before=$(host_view)

start_cluster
[ "$(host_view)" = "$host_before" ] || { diff <(echo "$host_before") <(host_view); fail "starting the cluster changed the host's network, hostname or /etc/hosts"; }

say "each node: its own hostname, address, host table and network namespace"
for i in 1 2; do
  [ "$(on node$i hostname)" = "node$i" ] || fail "node$i has hostname '$(on node$i hostname)'"
  addr=$(on node$i ip -4 -br addr show eth0 | awk '{print $3}')
  [ "$addr" = "10.213.7.$i/24" ] || fail "node$i has eth0 address '$addr', want 10.213.7.$i/24"
  [ "$(on node$i getent hosts node1 node2 | awk '{print $1}' | tr '\n' ' ')" = "10.213.7.1 10.213.7.2 " ] ||
    fail "node$i does not resolve node1/node2 through its /etc/hosts: $(on node$i getent hosts node1 node2)"
  # Only the private subnet is routed: no default route, nothing of the host's.
  routes=$(on node$i ip route | tr '\n' ';')
  [ "$routes" = "10.213.7.0/24 dev eth0 proto kernel scope link src 10.213.7.$i ;" ] ||
    fail "node$i routes '$routes', want the private /24 only"
  [ "$(on node$i readlink /proc/self/ns/net)" != "$(readlink /proc/self/ns/net)" ] ||
    fail "node$i runs in the host's network namespace"
done
# The nodes reach each other's slurmd. (The host has no interface on their network: host_view
# above. Nothing here connects from the host: its default route leads off this machine.)
on node1 timeout 5 bash -c 'exec 3<>/dev/tcp/node2/6818' || fail "node1 cannot reach slurmd on node2"

say "node-local /tmp, shared test directory"
local_file=/tmp/sambay-node-local-$$
on node1 bash -c "echo one >$local_file"
on node1 test -e "$local_file" || fail "node1 cannot write its /tmp"
on node2 test -e "$local_file" && fail "node2 sees node1's /tmp"
[ -e "$local_file" ] && fail "the host sees node1's /tmp"
on node2 bash -c "echo two >$local_file"
on node1 bash -c "echo shared >'$tmp/shared-file'"
[ "$(on node2 cat "$tmp/shared-file")" = shared ] || fail "node2 does not see the shared directory $tmp"

say "srun on both nodes"
out=$(client timeout 60 srun -N2 -n4 bash -c 'echo "$(hostname) $SLURM_PROCID"' | sort) ||
  fail "srun -N2 -n4 failed: $out"
[ "$(echo "$out" | tr '\n' ';')" = "node1 0;node1 1;node2 2;node2 3;" ] ||
  fail "srun -N2 -n4 placed the tasks as '$out', want 2 per node in block order"

say "a crash kills everything on the node; boot brings it back"
pids=$(ip netns pids "sambay-$SAMBAY_NS_TAG-node2" | tr '\n' ' ')
[ -n "${pids// /}" ] || fail "no process runs on node2"
bash "$ns" crash node2 || fail "crash node2 failed"
[ -z "$(ip netns pids "sambay-$SAMBAY_NS_TAG-node2")" ] || fail "processes survive on node2 after the crash"
for p in $pids; do pid_running "$p" && fail "pid $p of node2 survives the crash"; done
bash "$ns" status | grep -q "^node2: down" || fail "status does not show node2 down: $(bash "$ns" status)"
bash "$ns" boot node2 || fail "node2 did not boot"
[ "$(client sinfo -h -n node2 -o %t)" = idle ] || fail "node2 is not idle after boot"
on node2 test -e "$local_file" && fail "node2's /tmp survived its reboot"

say "start over a cluster that was never stopped: the leftovers are removed first"
old_pids=$(for i in 1 2; do ip netns pids "sambay-$SAMBAY_NS_TAG-node$i"; done | tr '\n' ' ')
bash "$ns" start || fail "a second start failed"
for p in $old_pids; do pid_running "$p" && fail "pid $p of the earlier cluster survives a new start"; done
[ "$(client sinfo -h -o '%D %t')" = "2 idle" ] || fail "after the second start: $(client sinfo)"

stop_cluster || fail "stop left processes or namespaces behind"
[ "$(host_view)" = "$host_before" ] || fail "the host's network, hostname or /etc/hosts differ after stop"
bash "$ns" stop || fail "a second stop (nothing left to stop) failed"
say "PASS"

#!/usr/bin/env python3
"""Starts a command and signals it while it starts up; prints its exit status and output.

usage: start_with_signal.py MODE SIGNAL COMMAND...

MODE pending: the signal is sent before the command's first instruction runs (it is started
              with the signal blocked, and the signal is sent right after exec, so it waits
              pending until the program installs its handlers);
MODE handler: the signal is sent as soon as /proc shows the command handling it (the earliest
              moment it can be acted on);
MODE DELAY_MS: the signal is sent DELAY_MS milliseconds after the handler appears;
MODE ranks:N: the command is a launcher (mpirun); the signal goes to it (mpirun forwards
              SIGUSR1 to the ranks) as soon as N of its child processes handle it.
Prints "status N" (128 + signal number for a death by signal) and then the output.
"""
import os
import signal
import subprocess
import sys
import time


def handles(pid, sig):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    except OSError:
        pass
    return False


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    mode, sig, command = sys.argv[1], getattr(signal, sys.argv[2]), sys.argv[3:]
    if mode == "pending":
        signal.pthread_sigmask(signal.SIG_BLOCK, {sig})
        p = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        p.send_signal(sig)
    else:
        p = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        if mode.startswith("ranks:"):
            ranks = int(mode.split(":")[1])
            while p.poll() is None and time.time() < deadline and \
                    sum(handles(c, sig) for c in children(p.pid)) < ranks:
                time.sleep(0.001)
        else:
            while not handles(p.pid, sig) and p.poll() is None and time.time() < deadline:
                time.sleep(0.0002)
        if mode not in ("handler",) and not mode.startswith("ranks:"):
            time.sleep(int(mode) / 1000)
        p.send_signal(sig)
    out, _ = p.communicate()
    status = p.returncode if p.returncode >= 0 else 128 - p.returncode
    print(f"status {status}")
    sys.stdout.write(out.decode(errors="replace"))


if __name__ == "__main__":
    main()

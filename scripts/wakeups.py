#!/usr/bin/env python3
"""Where a benchmark's wake-ups and CPU go, per process and thread.

Usage: scripts/wakeups.py DELAY WINDOW [MESSAGES]

Waits DELAY seconds, then reads every thread of the running `switchboard`, `postgres`,
`redis-server` and load-tool processes from /proc (voluntary and involuntary context
switches, utime + stime) at the start and at the end of a WINDOW of seconds, and prints what
each spent in between: a node's threads by pid, the others' summed by thread name. With
MESSAGES (the messages the system took in that window), also per message. Start it beside
a run, e.g. W4's measuring phase begins about 13 s into
`switchboard-load suite --scale quick --repeats 1 --workloads W4 --systems switchboard`:

    scripts/wakeups.py 13 6 6000 & target/release/switchboard-load suite ...

A voluntary switch is the thread going to sleep (waiting for a socket, a lock, a timer),
so about one wake-up; an involuntary one is the thread preempted while it could still run.
"""

import collections
import os
import sys
import time

COMMS = ("switchboard", "postgres", "redis-server", "switchboard-loa")
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def snapshot():
    threads = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            if comm not in COMMS:
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                base = f"/proc/{pid}/task/{tid}"
                with open(f"{base}/status") as f:
                    status = f.read()
                with open(f"{base}/comm") as f:
                    name = f.read().strip()
                with open(f"{base}/stat") as f:
                    stat = f.read().rsplit(")", 1)[1].split()
                vol = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
                invol = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
                threads[(pid, tid)] = (comm, name, vol, invol, int(stat[11]) + int(stat[12]))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # the thread ended meanwhile
    return threads


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    delay, window = float(sys.argv[1]), float(sys.argv[2])
    messages = int(sys.argv[3]) if len(sys.argv) == 4 else None
    time.sleep(delay)
    before = snapshot()
    time.sleep(window)
    after = snapshot()
    totals = collections.defaultdict(lambda: [0, 0, 0])
    for key, (comm, name, vol, invol, ticks) in after.items():
        if key not in before:
            continue
        _, _, vol0, invol0, ticks0 = before[key]
        group = f"{comm} {key[0]} {name}" if comm == "switchboard" else f"{comm} {name}"
        t = totals[group]
        t[0] += vol - vol0
        t[1] += invol - invol0
        t[2] += ticks - ticks0
    print(f"{'process, thread':46} {'voluntary':>10} {'involuntary':>12} {'CPU ms':>8}", end="")
    print("   per message: vol  invol  CPU µs" if messages else "")
    for group, (vol, invol, ticks) in sorted(totals.items(), key=lambda kv: -kv[1][2]):
        if vol + invol == 0:
            continue
        cpu_ms = ticks * TICK_MS
        line = f"{group[:46]:46} {vol:10d} {invol:12d} {cpu_ms:8.0f}"
        if messages:
            line += f"   {vol / messages:16.2f} {invol / messages:6.2f} {cpu_ms * 1000 / messages:7.0f}"
        print(line)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Where a worker's threads wait: off-CPU time by reason, from scheduler switches.

A worker below the raw consume rate on a machine that is not busy waits on something; this
says on what. Record every context switch with its user stack for a second or so while the
worker catches up, then give this script the dump and one thread id:

    perf record -a -e sched:sched_switch --call-graph dwarf,8192 -o sw.data -- sleep 1.2
    perf script -i sw.data -F tid,time,event,trace,ip,sym > sw.txt
    perf script -i sw.data -F comm,tid | sort | uniq -c | sort -rn | head   # thread ids
    python3 benches/scripts/offcpu.py sw.txt TID

Each switch away from the thread is classed by the stack it left from (or as preempted when
it was still runnable) and timed until the thread runs again (benches/RESULTS.md §11 used it
to find the reading thread and the decode lane waiting for each other).
"""

import collections
import re
import sys

# (reason, any of these in the stack), first match wins.
REASONS = [
    ("poll: librdkafka's queue empty", ("rd_kafka_queue_poll", "poll_queue", "rd_kafka_q_pop")),
    ("waiting for a decode lane's batch", ("Receiver",)),
    ("ClickHouse request (block_on)", ("block_on", "hyper", "clickhouse")),
    ("malloc arena lock", ("_int_free", "lll_lock", "malloc")),
    ("archive file sync", ("fsync", "sync_filesystem", "syncfs")),
    ("handing a batch to a lane", ("Sender",)),
]


def classify(state, stack):
    if state.startswith("R"):
        return "preempted (runnable)"
    for reason, marks in REASONS:
        if any(m in stack for m in marks):
            return reason
    frames = re.findall(r"[0-9a-f]+ (\S+)", stack)
    return "other: " + " < ".join(frames[10:14])


def main(path, tid):
    off_since, why = None, None
    total, count = collections.Counter(), collections.Counter()
    first = last = None
    for event in open(path).read().split("\n\n"):
        lines = event.strip().split("\n")
        head = re.match(r"\s*\d+\s+([\d.]+):.*sched_switch", lines[0]) if lines else None
        if not head:
            continue
        t = float(head.group(1))
        first, last = first or t, t
        prev = re.search(r"prev_pid=(\d+)", lines[0]).group(1)
        nxt = re.search(r"next_pid=(\d+)", lines[0]).group(1)
        if prev == tid:
            state = re.search(r"prev_state=(\S+)", lines[0]).group(1)
            off_since, why = t, classify(state, "\n".join(lines[1:]))
        elif nxt == tid and off_since is not None:
            total[why] += t - off_since
            count[why] += 1
            off_since = None
    if first is None:
        sys.exit(f"no scheduler switch in {path}: was it recorded with -e sched:sched_switch?")
    if not total:
        sys.exit(f"thread {tid} never left the CPU in {path}: is it the right thread id?")
    print(f"window {last - first:.2f} s; thread {tid} off CPU {sum(total.values()):.2f} s")
    for reason, seconds in total.most_common(12):
        print(f"  {seconds * 1000:7.0f} ms  {count[reason]:6d}x  {reason[:150]}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

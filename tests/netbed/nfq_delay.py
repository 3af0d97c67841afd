"""Delay, jitter and loss for one network namespace, in user space through NFQUEUE.

This kernel has no `sch_netem` (and no nft `queue` expression), so the bed queues the link's
packets with an iptables NFQUEUE rule (`-j NFQUEUE --queue-num Q --queue-bypass`, the xtables
target through nft_compat) and this program, run inside the same namespace, holds each packet
for `--delay-ms` ± `--jitter-ms` (uniform) before accepting it, or drops it with probability
`--loss`. Each packet's delay is drawn on its own, so packets can overtake each other, as under
netem with jitter. Uses NetfilterQueue (PyPI, built against Debian's libnetfilter-queue-dev),
whose Packet objects may be given their verdict after the callback returns.

Runs until SIGTERM/SIGINT, then accepts everything it still holds and prints one line of
figures: `nfq_delay queue=Q seen=N dropped=N max_held=N`. Bounded: at most `--max-held`
packets are held (past it a packet is accepted at once, counted as `overflow`).
"""

import argparse
import heapq
import itertools
import random
import select
import signal
import time

from netfilterqueue import NetfilterQueue


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=200)
    ap.add_argument("--jitter-ms", type=float, default=100)
    ap.add_argument("--loss", type=float, default=0.05)
    ap.add_argument("--max-held", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=20)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    held = []  # heap of (release time, tie, packet)
    tie = itertools.count()
    stats = {"seen": 0, "dropped": 0, "max_held": 0, "overflow": 0}

    def on_packet(pkt):
        stats["seen"] += 1
        if rng.random() < a.loss:
            stats["dropped"] += 1
            pkt.drop()
            return
        if len(held) >= a.max_held:
            stats["overflow"] += 1
            pkt.accept()
            return
        delay = max(0.0, a.delay_ms + rng.uniform(-a.jitter_ms, a.jitter_ms)) / 1000.0
        heapq.heappush(held, (time.monotonic() + delay, next(tie), pkt))
        stats["max_held"] = max(stats["max_held"], len(held))

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    q = NetfilterQueue()
    q.bind(a.queue, on_packet, max_len=a.max_held, range=0)
    fd = q.get_fd()
    print(f"nfq_delay queue={a.queue} ready", flush=True)
    while not stopping:
        now = time.monotonic()
        while held and held[0][0] <= now:
            heapq.heappop(held)[2].accept()
        timeout = max(0.0, held[0][0] - now) if held else 0.2
        try:
            readable, _, _ = select.select([fd], [], [], min(timeout, 0.2))
        except InterruptedError:
            continue
        if readable:
            q.run(block=False)
    while held:
        heapq.heappop(held)[2].accept()
    q.unbind()
    print(f"nfq_delay queue={a.queue} seen={stats['seen']} dropped={stats['dropped']} "
          f"max_held={stats['max_held']} overflow={stats['overflow']}", flush=True)


if __name__ == "__main__":
    main()

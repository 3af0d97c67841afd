"""The network-fault bed of issue 20: real boards, real Redis and real clients in network namespaces.

For one scenario at a time it builds, as root, a small LAN that exists only in namespaces named
`se-<pid>-<role>`: a bridge `br0` in `se-<pid>-lan`, and one namespace per machine joined to it
by a veth pair (`eth0` inside, 10.203.0.x/24): `redis` (.2), `replica` (.3) and `sentinels`
(.4, three sentinels on ports 26379-26381) when the scenario needs them, boards `a` (.11) and
`b` (.12). The root namespace's addresses and routes are never touched. Each board runs the
real stomp-edge binary (`$STOMP_EDGE_BIN`, defaults otherwise) on 127.0.0.1:8080 inside its own
namespace, and its clients (clients.mjs, @stomp/stompjs over `ws`) run there too.

Faults are made for real: cuts are nftables drop rules on a namespace's `eth0` (both ways or one
way); delay, jitter and loss are an iptables NFQUEUE rule plus nfq_delay.py (this kernel has no
`sch_netem`); Redis is killed (-9), hung (SIGSTOP/SIGCONT), restarted empty, flushed, has its
pub/sub clients killed, or fails over under Sentinel from a hung primary.

After each scenario the checker (`check`) reads every client's log and prints one line of figures;
the run ends with a table and exits 1 if any scenario failed. Everything is removed afterwards
(finally, and on SIGTERM); at start, namespaces `se-<pid>-*` of pids no longer alive are swept.

Usage (as root): python3 tests/netbed/netbed.py [scenario …]
Environment: STOMP_EDGE_BIN, NETBED_SCENARIOS (comma list, overrides the arguments; default all),
NETBED_LONG_SECONDS (the 60 s cut and the lossy link, default 60), NETBED_OUT (logs, default
target/netbed). The scenario names and what each asserts are in SCENARIOS below and docs/TESTING.md.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable
NODE = shutil.which("node") or "node"
BIN = os.path.abspath(os.environ.get("STOMP_EDGE_BIN", os.path.join(REPO, "target/debug/stomp-edge")))
OUT = os.path.abspath(os.environ.get("NETBED_OUT", os.path.join(REPO, "target/netbed")))
LONG = float(os.environ.get("NETBED_LONG_SECONDS", "60"))
PREFIX = f"se-{os.getpid()}-"
IPS = {"redis": "10.203.0.2", "replica": "10.203.0.3", "sentinels": "10.203.0.4", "a": "10.203.0.11",
       "b": "10.203.0.12"}
ROOM = "bed"
# Counters whose growth means a loss, an error or a repair the run should explain (metric names as
# of d86c005; a series is matched by name prefix, all labels summed).
LOSS_COUNTERS = ("stomp_edge_stream_lost_total", "stomp_edge_cluster_relay_dropped_total",
                 "stomp_edge_stream_recoveries_failed_total", "stomp_edge_stream_recoveries_incomplete_total")
ERROR_COUNTERS = LOSS_COUNTERS + ("stomp_edge_cluster_publish_errors_total",
                                  "stomp_edge_cluster_sequence_gaps_total")


def log(msg):
    print(f"[netbed {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*argv, check=True, quiet=False, input=None):
    r = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def kill_ns_processes(ns):
    """SIGKILLs what still runs in namespace `ns` (only the bed's own namespaces are passed)."""
    for p in sh("ip", "netns", "pids", ns, check=False).split():
        try:
            os.kill(int(p), signal.SIGCONT)
            os.kill(int(p), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def delete_ns(ns):
    kill_ns_processes(ns)
    sh("ip", "netns", "del", ns, check=False)


def sweep_stale():
    """Removes namespaces `se-<pid>-*` left by a bed whose process is gone."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(r"se-(\d+)-[a-z]+", name)
        if m and not pid_alive(int(m.group(1))):
            log(f"sweeping stale namespace {name}")
            delete_ns(name)


class Bed:
    """One scenario's namespaces and processes; `destroy` removes them all."""

    def __init__(self, roles, workdir):
        self.roles = list(roles)
        self.workdir = workdir
        self.procs = {}  # name -> (Popen, argv, logfile)
        self.made = []
        self.nfq = {}

    def ns(self, role):
        return PREFIX + role

    def create(self):
        lan = self.ns("lan")
        sh("ip", "netns", "add", lan)
        self.made.append(lan)
        sh("ip", "-n", lan, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", lan, "link", "set", "br0", "up")
        sh("ip", "-n", lan, "link", "set", "lo", "up")
        for role in self.roles:
            ns = self.ns(role)
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", lan, "link", "add", f"v-{role}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", lan, "link", "set", f"v-{role}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{IPS[role]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def destroy(self):
        for name, (proc, _, _) in list(self.procs.items()):
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                except ProcessLookupError:
                    pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                log(f"{name} did not exit")
        for ns in reversed(self.made):
            delete_ns(ns)
        self.made = []

    # --- processes ----------------------------------------------------------------------------
    def start(self, name, role, argv, env=None):
        logfile = open(os.path.join(self.workdir, f"{name}.log"), "ab")
        full = ["ip", "netns", "exec", self.ns(role)] + argv
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                                env=env)
        self.procs[name] = (proc, full, logfile)
        return proc

    def signal(self, name, sig):
        self.procs[name][0].send_signal(sig)

    def exec(self, role, *argv, check=True):
        return sh("ip", "netns", "exec", self.ns(role), *argv, check=check)

    def start_redis(self, name="redis", role="redis", extra=()):
        d = os.path.join(self.workdir, f"{name}-data")
        os.makedirs(d, exist_ok=True)
        self.start(name, role, ["redis-server", "--port", "6379", "--bind", IPS[role], "--save", "",
                                "--appendonly", "no", "--dir", d, "--protected-mode", "no", *extra])
        self.wait_cli(role, 6379)

    def wait_cli(self, role, port, deadline_s=10):
        end = time.time() + deadline_s
        while time.time() < end:
            if self.cli(role, port, "PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis on {role}:{port} did not answer")

    def cli(self, role, port, *args):
        return self.exec(role, "redis-cli", "-h", IPS[role], "-p", str(port), *args, check=False)

    def restart_redis_empty(self, name="redis", role="redis"):
        proc, full, logfile = self.procs[name]
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(5)
        self.procs[name] = (subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=logfile,
                                             stderr=subprocess.STDOUT), full, logfile)
        self.wait_cli(role, 6379)

    def start_sentinels(self):
        for i, port in enumerate((26379, 26380, 26381)):
            conf = os.path.join(self.workdir, f"sentinel-{port}.conf")
            with open(conf, "w", encoding="utf-8") as f:
                f.write(f"port {port}\nbind {IPS['sentinels']}\ndir {self.workdir}\n"
                        f"sentinel monitor mymaster {IPS['redis']} 6379 2\n"
                        "sentinel down-after-milliseconds mymaster 1000\n"
                        "sentinel failover-timeout mymaster 5000\nsentinel parallel-syncs mymaster 1\n")
            self.start(f"sentinel{i + 1}", "sentinels", ["redis-server", conf, "--sentinel"])
        end = time.time() + 30
        for port in (26379, 26380, 26381):
            while True:
                info = self.cli("sentinels", port, "SENTINEL", "MASTER", "mymaster").split("\n")
                fields = dict(zip(info[::2], info[1::2]))
                if fields.get("num-slaves") == "1" and fields.get("num-other-sentinels") == "2":
                    break
                if time.time() > end:
                    raise RuntimeError(f"sentinel {port} never saw the replica and the other sentinels")
                time.sleep(0.2)

    def sentinel_primary(self):
        out = self.cli("sentinels", 26379, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster").split()
        return ":".join(out[:2])

    def start_board(self, role, redis_url):
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOMP_EDGE_")}
        self.start(f"board-{role}", role, [BIN, "--redis", redis_url, "--server-id", f"board-{role}",
                                           "--listen", "127.0.0.1:8080"], env=env)

    # --- link faults --------------------------------------------------------------------------
    def cut(self, role, direction="both"):
        """Drops every packet on `role`'s LAN link: `both`, `in` (to it) or `out` (from it)."""
        rules = []
        if direction in ("both", "in"):
            rules.append('chain in { type filter hook input priority 0; iifname "eth0" drop; }')
        if direction in ("both", "out"):
            rules.append('chain out { type filter hook output priority 0; oifname "eth0" drop; }')
        script = "table inet netbed {\n" + "\n".join(rules) + "\n}\n"
        sh("ip", "netns", "exec", self.ns(role), "nft", "-f", "-", input=script)

    def heal(self, role):
        sh("ip", "netns", "exec", self.ns(role), "nft", "delete", "table", "inet", "netbed")

    def degrade(self, role, delay_ms, jitter_ms, loss):
        """Delay ± jitter and loss on `role`'s link, each way, through NFQUEUE (queues 1 out, 2 in)."""
        for q in (1, 2):
            self.start(f"nfq{q}-{role}", role, [PY, os.path.join(HERE, "nfq_delay.py"), "--queue", str(q),
                                                "--delay-ms", str(delay_ms), "--jitter-ms", str(jitter_ms),
                                                "--loss", str(loss), "--seed", str(q)])
        time.sleep(0.5)  # bound before the rule sends packets there (bypass passes them meanwhile)
        for q, chain, iface in ((1, "OUTPUT", "-o"), (2, "INPUT", "-i")):
            self.exec(role, "iptables", "-A", chain, iface, "eth0", "-j", "NFQUEUE", "--queue-num", str(q),
                      "--queue-bypass")

    def restore(self, role):
        self.exec(role, "iptables", "-F", "INPUT")
        self.exec(role, "iptables", "-F", "OUTPUT")
        for q in (1, 2):
            proc = self.procs[f"nfq{q}-{role}"][0]
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- the checker ---------------------------------------------------------------------------------
def parse_metrics(text):
    out = {}
    for line in (text or "").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        try:
            series, value = line.rsplit(" ", 1)
            name = series.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def load(path):
    recs = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            recs = [json.loads(line) for line in f if line.strip()]
    return recs


# Events that end a fault, and how long after one the catch-up burst may hold own-board delivery
# up without failing the scenario (the delay is still printed, as late_catch_up).
RECOVERY_EVENTS = ("heal", "restore", "sigcont")
CATCH_UP_S = 5.0


def check(sc, logs, t0, extra):
    """Figures and failures of one scenario from the clients' logs (`logs`: board -> records)."""
    sends, rcpts, notices, disc, setup_errors, subs = {}, {}, {}, [], [], {}
    recv = {}  # receiver -> list of msg records in arrival order
    health, metrics, api = {}, {}, {}
    api_at = 0.0  # when the last board read /api/rooms: clients leave only after that
    for board, recs in logs.items():
        for r in recs:
            k = r["k"]
            if k == "send":
                sends[(r["c"], r["seq"])] = r["t"]
            elif k == "rcpt":
                rcpts[(r["c"], r["seq"])] = r["t"]
            elif k == "msg":
                recv.setdefault(r["r"], []).append(r)
            elif k == "client":
                subs[r["c"]] = r
            elif k == "notice" and r.get("what") not in ("send_failed",):
                notices.setdefault(r["r"], []).append(r)
            elif k == "disc":
                disc.append(r)
            elif k == "setup_error":
                setup_errors.append(r)
            elif k == "health":
                health.setdefault(board, []).append(r)
            elif k == "metrics":
                metrics.setdefault(board, {})[r["phase"]] = parse_metrics(r["text"])
            elif k == "api_members":
                api[(board, r.get("room", ROOM))] = sorted(r["members"] or [])
                api_at = max(api_at, r.get("t", 0))
    receivers = sorted(subs)
    got = {r: {} for r in receivers}
    dup = reorder = late_local = late_catch_up = no_offset = 0
    recoveries = [t0 + at for at, what, _ in sc["events"] if what in RECOVERY_EVENTS]
    lat = {"local": [], "remote": []}  # delivery latency, s
    offsets = {}
    for r in receivers:
        top = {}
        for m in recv.get(r, []):
            if m["type"] != "CHAT" or m["seq"] is None:
                continue
            key = (m["s"], m["seq"])
            if key in got[r]:
                dup += 1
            else:
                got[r][key] = m["t"]
            if m["seq"] < top.get(m["s"], 0):
                reorder += 1
            top[m["s"]] = max(top.get(m["s"], 0), m["seq"])
            # Latency only for live deliveries: a listener that subscribed (or resumed) after the
            # SEND gets it as history, late by design.
            if key in sends and subs[r]["t_sub"] < sends[key]:
                lat["local" if m["s"][0] == r[0] else "remote"].append(m["t"] - sends[key])
                if m["s"][0] == r[0] and m["t"] - sends[key] > 1.0:
                    # Own-board delivery must not wait for Redis. Right after a link comes back,
                    # though, both boards' backlogs arrive at once and the clients, sharing the
                    # bed's two cores, read them: a delay there is CPU, reported, not failed on.
                    if any(at - 1.0 <= sends[key] < at + CATCH_UP_S for at in recoveries):
                        late_catch_up += 1
                    else:
                        late_local += 1
            if m["off"] is None:
                no_offset += 1
            else:
                offsets.setdefault((m["ep"], m["off"]), set()).add(key)
    offset_conflicts = sum(1 for v in offsets.values() if len(v) > 1)
    lost_pairs, lost_msgs, silent = 0, set(), 0
    lost_after = 0  # lost among messages sent after sc["settled_at"] (seconds after t0), if set
    for key in rcpts:
        room, sent_at = subs.get(key[0], {}).get("room"), sends.get(key, 0)
        for r in receivers:
            since = subs[r]["t_sub"]
            if subs[r].get("from"):  # resumed after that message: what was sent 0.5 s after it on
                since = sends.get(tuple(subs[r]["from"]), since) + 0.5
            if subs[r]["room"] != room or since >= sent_at:
                continue  # another room, or a listener that subscribed after the SEND
            if key not in got[r]:
                lost_pairs += 1
                lost_msgs.add(key)
                if r not in notices:
                    silent += 1
                if sc.get("settled_at") is not None and sends.get(key, 0) >= t0 + sc["settled_at"]:
                    lost_after += 1
    unconfirmed = len(sends) - len(rcpts)
    flips = {}
    for board, hs in health.items():
        states = [h["redis"] == "up" for h in sorted(hs, key=lambda h: h["t"])]
        flips[board] = sum(1 for x, y in zip(states, states[1:]) if x != y)
    deltas = {}
    for board, m in metrics.items():
        if "start" in m and "end" in m:
            for name in ERROR_COUNTERS:
                d = m["end"].get(name, 0.0) - m["start"].get(name, 0.0)
                if d:
                    deltas[f"{board}:{name.replace('stomp_edge_', '')}"] = int(d)
    counted_loss = sum(v for k, v in deltas.items() if k.split(":", 1)[1] in
                       tuple(n.replace("stomp_edge_", "") for n in LOSS_COUNTERS))
    pct = {}
    for where, xs in lat.items():
        xs.sort()
        if xs:
            pct[f"{where}_p50_ms"] = round(1000 * xs[len(xs) // 2])
            pct[f"{where}_p99_ms"] = round(1000 * xs[min(len(xs) - 1, len(xs) * 99 // 100)])
            pct[f"{where}_max_ms"] = round(1000 * xs[-1])
    no_epoch = sorted(c for c, r in subs.items() if not r.get("epoch"))
    fig = {"sent": len(sends), "accepted": len(rcpts), "unconfirmed": unconfirmed,
           "deliveries": sum(len(v) for v in got.values()), "lost": lost_pairs, "lost_msgs": len(lost_msgs),
           "silent": silent, "dup": dup, "reorder": reorder, "late_local": late_local,
           "late_catch_up": late_catch_up, "no_offset": no_offset,
           "offset_conflicts": offset_conflicts, "flips": flips, "told": sorted(notices),
           "no_epoch": len(no_epoch), "disc": len(disc), "setup_errors": len(setup_errors), "counters": deltas, **pct, **extra}
    fails = []
    rules = sc["expect"]

    def need(cond, what):
        if not cond:
            fails.append(what)

    need(not setup_errors, f"setup errors: {[e['what'] for e in setup_errors][:3]}")
    need(len(sends) > 0, "nothing sent")
    need(not disc, f"{len(disc)} clients lost their connection")
    need(unconfirmed == 0, f"{unconfirmed} SENDs never got their RECEIPT")
    need(dup == 0, f"{dup} duplicates")
    need(reorder == 0, f"{reorder} reorders per sender")
    need(late_local == 0, f"{late_local} own-board deliveries > 1 s late")
    need(not no_epoch, f"SUBSCRIBE RECEIPT without a real x-stream-epoch for {no_epoch}")
    need(offset_conflicts == 0, f"{offset_conflicts} offsets given to two messages in one epoch")
    if rules.get("loss") == "none":
        need(lost_pairs == 0, f"{lost_pairs} deliveries lost ({len(lost_msgs)} messages)")
    else:
        need(silent == 0, f"{silent} deliveries lost silently (receiver told nothing)")
        need(lost_pairs == 0 or counted_loss > 0, f"{lost_pairs} deliveries lost and no loss counter moved")
    if "lost_after" in rules:
        need(lost_after == 0, f"{lost_after} deliveries lost of messages sent after the failover")
        fig["lost_after"] = lost_after
    if "max_flips" in rules:
        worst = max(flips.values() or [0])
        need(worst <= rules["max_flips"], f"/healthz redis flipped {worst} times (at most {rules['max_flips']})")
    if rules.get("no_error_counters"):
        need(not deltas, f"error/loss counters moved: {deltas}")
    if rules.get("membership"):
        everyone = sorted(c for c in receivers if "late" not in c)
        self_leave = []
        for r in everyone:
            view = set()
            for m in recv.get(r, []):
                if m["t"] > api_at:
                    break
                if m["type"] == "JOIN":
                    view.add(m["s"])
                elif m["type"] == "LEAVE":
                    view.discard(m["s"])
                    if m["s"] == r:
                        self_leave.append(r)
            board_list = api.get((r[0], subs[r]["room"]))
            need(sorted(view) == board_list, f"{r} sees members {sorted(view)}, /api/rooms on its board "
                                             f"says {board_list}")
        for (board, room), members in api.items():
            need(members == everyone, f"/api/rooms/{room} on board {board}: {members}, expected {everyone}")
        need(not self_leave, f"told they themselves left: {sorted(set(self_leave))}")
        fig["self_leaves"] = len(self_leave)
    return fig, fails


# --- scenarios -----------------------------------------------------------------------------------
def board_urls(sentinel):
    if sentinel:
        hosts = ",".join(f"{IPS['sentinels']}:{p}" for p in (26379, 26380, 26381))
        return f"redis-sentinel://{hosts}/#mymaster"
    return f"redis://{IPS['redis']}:6379"


def scenarios():
    """name -> scenario. `events` are (seconds after the first SEND, what, args)."""
    L = LONG
    cut = {"loss": "none", "max_flips": 2}
    return {
        "cut10": {"what": "board a cut from Redis 10 s, both ways, 100 msg/s, 5 clients per board",
                  "clients": 5, "rate": 10, "duration": 25,
                  "events": [(5, "cut", "a"), (15, "heal", "a")], "expect": cut},
        "cut60": {"what": f"board a cut from Redis {L:g} s, both ways, 100 msg/s, 5 clients per board",
                  "clients": 5, "rate": 10, "duration": L + 15,
                  "events": [(5, "cut", "a"), (5 + L, "heal", "a")], "expect": cut},
        "oneway-out": {"what": "board a's packets to the LAN dropped 8 s (it hears, is not heard)",
                       "clients": 5, "rate": 10, "duration": 20,
                       "events": [(5, "cut_out", "a"), (13, "heal", "a")], "expect": cut},
        "oneway-in": {"what": "packets to board a dropped 8 s (it is heard, hears nothing)",
                      "clients": 5, "rate": 10, "duration": 20,
                      "events": [(5, "cut_in", "a"), (13, "heal", "a")], "expect": cut},
        "lossy": {"what": f"board b's link 200±100 ms delay and 5 % loss each way for {L:g} s, 100 msg/s",
                  "clients": 5, "rate": 10, "duration": L + 8,
                  "events": [(3, "degrade", "b"), (3 + L, "restore", "b")],
                  "expect": {"loss": "none", "max_flips": 0}},
        "chat30": {"what": "board a cut 30 s at chat pace (2 clients per board, 1 msg/s each), membership",
                   "clients": 2, "rate": 1, "duration": 45, "from_first": True,
                   "events": [(5, "cut", "a"), (35, "heal", "a")],
                   "expect": {"loss": "none", "max_flips": 2, "membership": True}},
        "empty-restart": {"what": "Redis unreachable from both boards 30 s and restarted empty meanwhile",
                          "clients": 5, "rate": 4, "duration": 45,
                          "events": [(5, "cut", "redis"), (20, "restart_empty", "redis"), (35, "heal", "redis")],
                          "expect": {"loss": "counted"}},
        "sentinel": {"what": "Sentinel failover from a SIGSTOPped primary (1 replica, 3 sentinels, 1 s), "
                             "2 rooms, a new listener per room and board after it",
                     "clients": 4, "rate": 4, "duration": 35, "sentinel": True, "settled_at": 18,
                     "rooms": "bed,bed2", "late_at": 18, "events": [(5, "sigstop", "redis")],
                     "expect": {"loss": "counted", "lost_after": 0}},
        "redis-kill": {"what": "Redis killed (-9) and restarted empty 3 s later, 40 msg/s",
                       "clients": 4, "rate": 5, "duration": 14,
                       "events": [(4, "kill9", "redis"), (7, "restart_empty", "redis")],
                       "expect": {"loss": "counted", "max_flips": 2}},
        "flushall": {"what": "FLUSHALL under 40 msg/s; a new listener per board resumes from before it",
                     "clients": 4, "rate": 5, "duration": 12, "late_at": 8, "resume_mark": 4,
                     "events": [(5, "flushall", "redis")], "expect": {"loss": "counted", "max_flips": 0}},
        "pubsub-kill": {"what": "CLIENT KILL TYPE pubsub (every board's pub/sub link cut by Redis), 40 msg/s",
                        "clients": 4, "rate": 5, "duration": 12,
                        "events": [(5, "kill_pubsub", "redis")], "expect": {"loss": "none", "max_flips": 2}},
        "stall": {"what": "Redis hung by SIGSTOP for 4 s under 40 msg/s",
                  "clients": 3, "rate": 4, "duration": 15,
                  "events": [(4, "sigstop", "redis"), (8, "sigcont", "redis")],
                  "expect": {"loss": "none", "max_flips": 2, "no_error_counters": True}},
    }


def do_event(bed, what, role):
    if what == "cut":
        bed.cut(role, "both")
    elif what == "cut_out":
        bed.cut(role, "out")
    elif what == "cut_in":
        bed.cut(role, "in")
    elif what == "heal":
        bed.heal(role)
    elif what == "degrade":
        bed.degrade(role, 200, 100, 0.05)
    elif what == "restore":
        bed.restore(role)
    elif what == "sigstop":
        bed.signal(role, signal.SIGSTOP)
    elif what == "kill9":
        bed.signal(role, signal.SIGKILL)
    elif what == "sigcont":
        bed.signal(role, signal.SIGCONT)
    elif what == "restart_empty":
        bed.restart_redis_empty(role, role)
    elif what == "flushall":
        bed.cli(role, 6379, "FLUSHALL")
    elif what == "kill_pubsub":
        bed.cli(role, 6379, "CLIENT", "KILL", "TYPE", "pubsub")
    else:
        raise ValueError(what)


def run_scenario(name, sc):
    workdir = os.path.join(OUT, name)
    os.makedirs(workdir, exist_ok=True)
    for f in os.listdir(workdir):
        p = os.path.join(workdir, f)
        if os.path.isfile(p):
            os.remove(p)
    sentinel = sc.get("sentinel", False)
    roles = ["redis"] + (["replica", "sentinels"] if sentinel else []) + ["a", "b"]
    bed = Bed(roles, workdir)
    started = time.time()
    extra = {}
    try:
        bed.create()
        bed.start_redis()
        if sentinel:
            bed.start_redis("replica", "replica", ("--replicaof", IPS["redis"], "6379"))
            bed.start_sentinels()
        for board in ("a", "b"):
            bed.start_board(board, board_urls(sentinel))
        go = os.path.join(workdir, "go")
        for board in ("a", "b"):
            argv = [NODE, os.path.join(HERE, "clients.mjs"), "--board", board, "--clients", str(sc["clients"]),
                    "--rate", str(sc["rate"]), "--go-file", go, "--duration", str(sc["duration"]),
                    "--out", os.path.join(workdir, f"{board}.jsonl")]
            if sc.get("from_first"):
                argv.append("--from-first")
            if sc.get("rooms"):
                argv += ["--rooms", sc["rooms"]]
            if sc.get("late_at"):
                argv += ["--late-at", str(sc["late_at"]), "--resume-mark", str(sc.get("resume_mark", 0))]
            bed.start(f"clients-{board}", board, argv)
        end = time.time() + 40
        while not all(os.path.exists(os.path.join(workdir, f"{b}.jsonl.ready")) for b in ("a", "b")):
            if time.time() > end or any(bed.procs[f"clients-{b}"][0].poll() is not None for b in ("a", "b")):
                raise RuntimeError("clients not ready (see clients-*.log)")
            time.sleep(0.1)
        t0 = time.time() + 0.5
        with open(go + ".tmp", "w", encoding="utf-8") as f:
            f.write(str(t0))
        os.rename(go + ".tmp", go)
        for at, what, role in sc["events"]:
            pause = t0 + at - time.time()
            if pause > 0:
                time.sleep(pause)
            log(f"{name}: t={time.time() - t0:5.1f}s {what} {role}")
            do_event(bed, what, role)
            if sentinel and what == "sigstop":
                extra["primary_before"] = bed.sentinel_primary()
        end = t0 + sc["duration"] + 60
        while not all(os.path.exists(os.path.join(workdir, f"{b}.jsonl.scraped")) for b in ("a", "b")):
            if time.time() > end or any(bed.procs[f"clients-{b}"][0].poll() is not None for b in ("a", "b")):
                break
            time.sleep(0.1)
        open(go + ".end", "w", encoding="utf-8").close()  # both boards read: the clients may leave
        for board in ("a", "b"):
            proc = bed.procs[f"clients-{board}"][0]
            proc.wait(max(1, end + 30 - time.time()))
        if sentinel:
            extra["primary_after"] = bed.sentinel_primary()
        logs = {b: load(os.path.join(workdir, f"{b}.jsonl")) for b in ("a", "b")}
        fig, fails = check(sc, logs, t0, extra)
    except Exception as e:  # the scenario could not run: a failure with the reason
        fig, fails = {}, [f"bed error: {e!r}"]
    finally:
        bed.destroy()
    fig["seconds"] = round(time.time() - started, 1)
    return fig, fails


def main(argv):
    if os.geteuid() != 0:
        print("netbed: needs root (network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    all_sc = scenarios()
    wanted = [s for s in os.environ.get("NETBED_SCENARIOS", "").split(",") if s] or argv or list(all_sc)
    unknown = [w for w in wanted if w not in all_sc]
    if unknown:
        print(f"netbed: unknown scenario(s) {unknown}; known: {', '.join(all_sc)}", file=sys.stderr)
        return 2
    sweep_stale()
    results = []
    for name in wanted:
        sc = all_sc[name]
        log(f"{name}: {sc['what']}")
        fig, fails = run_scenario(name, sc)
        status = "PASS" if not fails else "FAIL"
        results.append((name, status, fig, fails))
        log(f"{name}: {status} " + " ".join(f"{k}={v}" for k, v in fig.items() if k not in ("told",)))
        for f in fails:
            log(f"{name}:   - {f}")
    print("\nscenario        result  sent   accepted lost  silent dup   reorder late  flips(a,b) secs")
    for name, status, fig, _ in results:
        fl = fig.get("flips", {})
        print(f"{name:<15} {status:<6}  {fig.get('sent', '-')!s:<6} {fig.get('accepted', '-')!s:<8} "
              f"{fig.get('lost', '-')!s:<5} {fig.get('silent', '-')!s:<6} {fig.get('dup', '-')!s:<5} "
              f"{fig.get('reorder', '-')!s:<7} {fig.get('late_local', '-')!s:<5} "
              f"{fl.get('a', '-')},{fl.get('b', '-'):<8} {fig.get('seconds', '-')}")
    failed = [r[0] for r in results if r[1] != "PASS"]
    print(f"netbed: {len(results) - len(failed)} passed, {len(failed)} failed" +
          (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Redis instructions per message of rmq's Lua scripts, counted by callgrind.

Wall-clock figures on the development VM move by a third from one hour to the next; an
instruction count does not. This runs a private redis-server under
`valgrind --tool=callgrind`, loads produce.lua, fetch.lua and ack.lua (each with the
lib.lua definitions it names, as `scripts::assemble` in rmq-runtime/src/scripts.rs builds
them; keep the two in step), drives one fixed sequence of calls through a raw socket, and
prints the instructions inside EVALSHA (`evalGenericCommand`, inclusive) per message.

    tools/script_cost.py [--rev REV] [--phase idle|cycle|drain|burst|batch] [--n N]
                         [--payload BYTES] [--ttl MS] [--batch N]

  --rev      take the scripts from this git revision (default: the working tree)
  --phase    idle:  N fetches of an empty topic by a parked consumer (the idle poll)
             cycle: N messages on the latency path: a stamped single send handed to a
                    parked, subscribed consumer, its ack, the fetch that parks again
             drain: N rounds of 100: one batch produce, one fetch of 100, one ack of 100
             burst: N rounds of 200 single sends due at one instant, then the fetch of 10
                    that promotes them all and the fetch of the other 190 (the sends and
                    the fetches counted apart; the acks not at all)
             batch: N rounds of one batch call of --batch ready messages, as the producer
                    stores it after its first call (MULTI: HSET, LPUSH, EVALSHA batch.lua,
                    EXEC), and one through produce.lua (a first call, a retry, or a batch
                    with delays or mixed priorities); every command of the call is counted,
                    its parsing included (inside processInputBuffer), since a MULTI's HSET
                    and LPUSH run outside any script
  --n        calls, messages or rounds (default 300, 300, 30, 10, 10)
  --batch    messages a call in the batch phase (default 100)
  --payload  payload bytes (default 32: with the default TTL, an envelope of 64 bytes, the
             largest Redis keeps in a listpack hash; larger ones make the hash a hashtable by
             themselves; without a TTL the envelope is 12 bytes shorter)
  --ttl      the messages' TTL in ms (default 86400000: the runtime's default of 24 h, so
             every envelope carries an expiry and a fetch reads it); 0 = none

Envelopes are built as the producer writes them: "1|<produced_ms>|<expire_ms>|0|" (priority,
stamp, expiry or 0, no headers), then the payload.

Needs valgrind, redis-server and python3. Takes about ten seconds a run.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUA = "rmq-runtime/lua/"


def source(rev, name):
    if rev is None:
        with open(os.path.join(ROOT, LUA, name)) as f:
            return f.read()
    return subprocess.run(["git", "-C", ROOT, "show", f"{rev}:{LUA}{name}"],
                          check=True, capture_output=True, text=True).stdout


def assemble(lib, body):
    """The lib.lua definitions `body` names, directly or through another, then `body`."""
    items, open_ = [], False
    for line in lib.split("\n"):
        if open_:
            items[-1][1].append(line)
            open_ = line != "end"
            continue
        if not line.startswith("local "):
            continue
        rest = line[len("local "):]
        function = rest.startswith("function ")
        if function:
            rest = rest[len("function "):]
        items.append([re.match(r"[A-Za-z0-9_]*", rest).group(0), [line]])
        open_ = function

    def mentions(code, name):
        word = r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])"
        return any(re.search(word, l.split("--")[0]) for l in code.split("\n"))

    used = [False] * len(items)
    grew = True
    while grew:
        grew = False
        for i, (name, _) in enumerate(items):
            if not used[i] and (mentions(body, name) or any(
                    u and mentions("\n".join(items[j][1]), name) for j, u in enumerate(used))):
                used[i] = grew = True
    return "".join("\n".join(code) + "\n" for (_, code), u in zip(items, used) if u) + "\n" + body


class Redis:
    def __init__(self, port):
        for _ in range(150):
            try:
                self.sock = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.2)
        self.file = self.sock.makefile("rb")

    @staticmethod
    def encode(*args):
        args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

    def read(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind in b"+:":
            return rest
        if kind == b"$":
            return None if int(rest) < 0 else self.file.read(int(rest) + 2)[:-2]
        if kind == b"*":
            return None if int(rest) < 0 else [self.read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def call(self, *args):
        self.sock.sendall(self.encode(*args))
        return self.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev")
    ap.add_argument("--phase", choices=["idle", "cycle", "drain", "burst", "batch"],
                    default="cycle")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--n", type=int)
    ap.add_argument("--payload", type=int, default=32)
    ap.add_argument("--ttl", type=int, default=86_400_000)
    args = ap.parse_args()
    n = args.n or {"drain": 30, "burst": 10, "batch": 10}.get(args.phase, 300)
    lib = source(args.rev, "lib.lua")
    names = ("produce", "fetch", "ack") + (("batch",) if args.phase == "batch" else ())
    scripts = {s: assemble(lib, source(args.rev, s + ".lua")) for s in names}
    # since ack.lua took the ids beside the leases (older revisions parse them)
    rev_ack_ids = "then the id of each" in source(args.rev, "ack.lua")
    # since produce.lua took a stamped call of one message in a compact form
    rev_compact = "may come compact" in source(args.rev, "produce.lua")

    out = os.path.join(tempfile.mkdtemp(prefix="script_cost."), "callgrind.out")
    port = 7490
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
         "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = Redis(port)
        sha = {s: r.call("SCRIPT", "LOAD", code).decode() for s, code in scripts.items()}
        p = "b:{t}:"
        produce_keys = [p + k for k in ("m", "p0", "p1", "p2", "delayed", "stats", "wake",
                                        "inflight", "waiting", "paused")]
        fetch_keys = [p + k for k in ("m", "p0", "p1", "p2", "delayed", "inflight", "attempts",
                                      "errors", "dead", "stats", "paused", "waiting")]
        ack_keys = [p + k for k in ("m", "inflight", "errors", "stats", "metrics")]
        park = "30000|c1"
        body = b'{"n":' + b"1" * max(1, args.payload - 6) + b"}"

        def fetch(want, member, now=""):
            return r.call("EVALSHA", sha["fetch"], len(fetch_keys), *fetch_keys,
                          now, want, 30000, 4, "1", 1000, "1", member)

        def envelope(ms, delay_ms=0):
            expire = ms + delay_ms + args.ttl if args.ttl else 0
            return b"1|%d|%d|0|" % (ms, expire) + body

        def callgrind(*command):
            subprocess.run(["callgrind_control", *command, str(server.pid)],
                           check=True, capture_output=True)

        def acked(leases):
            # ack.lua's arguments: the leases, then their ids, as the client sends them
            return list(leases) + [l.rsplit(b"|", 2)[0] for l in leases] if rev_ack_ids \
                else list(leases)

        def stamp():
            secs, micros = r.call("TIME")
            return int(secs) * 1000 + int(micros) // 1000

        subscriber = Redis(port)
        subscriber.sock.sendall(Redis.encode("SUBSCRIBE", p + "wake:c1"))
        subscriber.read()
        if args.phase in ("idle", "cycle"):
            fetch(10, park)
        start = stamp()
        callgrind("--zero")
        messages = n
        for i in range(n):
            if args.phase == "idle":
                fetch(10, park)
            elif args.phase == "cycle":
                # now = the stamp, so the script keeps it however slow valgrind makes Redis
                ms = stamp()
                if rev_compact:
                    # as producer.rs sends a stamped send(): id, envelope (compact form)
                    r.call("EVALSHA", sha["produce"], len(produce_keys), *produce_keys, ms, ms,
                           "m%06d" % i, envelope(ms))
                else:
                    r.call("EVALSHA", sha["produce"], len(produce_keys), *produce_keys, ms, ms,
                           "1", "1", "1", "0", args.ttl, "m%06d" % i, envelope(ms))
                pushed = subscriber.read()[2]
                lease = re.match(rb"(\d+):", pushed)
                lease = pushed[lease.end():lease.end() + int(lease.group(1))]
                r.call("EVALSHA", sha["ack"], len(ack_keys), *ack_keys, "", "h3:1 hs:20",
                       *acked([lease]))
                fetch(10, park)
            elif args.phase == "batch":
                # the same batch both ways, each into a topic of its own; now = the stamp
                ms = stamp()
                size = args.batch
                for way, q in (("produce", "b:{t}:"), ("multi", "b:{u}:")):
                    ids = [b"mhq1x2abc%06dk%04d" % (i, j) for j in range(size)]
                    pairs = [x for id_ in ids for x in (id_, envelope(ms))]
                    keys = [q + k for k in ("m", "p0", "p1", "p2", "delayed", "stats", "wake",
                                            "inflight", "waiting", "paused")]
                    callgrind("--zero")
                    if way == "produce":
                        r.call("EVALSHA", sha["produce"], len(keys), *keys, ms, ms, "1",
                               size, "1", "0", args.ttl, *pairs)
                    else:
                        batch_keys = keys[:4] + keys[5:]
                        block = [("MULTI",), ("HSET", keys[0], *pairs), ("LPUSH", keys[2], *ids),
                                 ("EVALSHA", sha["batch"], len(batch_keys), *batch_keys, ms, ms,
                                  size, "1", args.ttl), ("EXEC",)]
                        r.sock.sendall(b"".join(Redis.encode(*c) for c in block))
                        replies = [r.read() for _ in block]
                        assert replies[-1][2] is not None, replies[-1]
                    callgrind("--dump=" + way)
                messages = n * size
            elif args.phase == "burst":
                # on a clock of the tool's own, 10 s a round: every send is stamped and due
                # 1 s later, and the fetches run 1 ms after that (a timer's wake-up)
                ms = start + i * 10_000
                callgrind("--zero")
                for j in range(200):
                    if rev_compact:
                        r.call("EVALSHA", sha["produce"], len(produce_keys), *produce_keys, ms,
                               ms, "d%03dk%03d" % (i, j), envelope(ms, 1000), "1000000")
                    else:
                        r.call("EVALSHA", sha["produce"], len(produce_keys), *produce_keys, ms,
                               ms, "1", "1", "1", "1000000", args.ttl, "d%03dk%03d" % (i, j),
                               envelope(ms, 1000))
                callgrind("--dump=sends")
                due = ms + 1001
                leases = fetch(10, "", due)[5::2] + fetch(1000, "", due)[5::2]
                callgrind("--dump=fetches")
                assert len(leases) == 200, len(leases)
                done = r.call("EVALSHA", sha["ack"], len(ack_keys), *ack_keys, due,
                              "h3:200 hs:4000", *acked(leases))
                assert int(done[0]) == 200, done
                messages = n * 200
            else:
                ms = stamp()
                pairs = []
                for j in range(100):
                    pairs += ["mhq1x2abc%06dk%03d" % (i, j), envelope(ms)]
                r.call("EVALSHA", sha["produce"], len(produce_keys), *produce_keys, ms, ms,
                       "1", "100", "1", "0", args.ttl, *pairs)
                leases = fetch(100, "")[5::2]
                assert len(leases) == 100, len(leases)
                done = r.call("EVALSHA", sha["ack"], len(ack_keys), *ack_keys, "",
                              "h3:100 hs:2000", *acked(leases))
                assert int(done[0]) == 100, done
                messages = n * 100
        callgrind("--dump=measured")
        time.sleep(1)
        r.sock.sendall(Redis.encode("SHUTDOWN", "NOSAVE"))
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()

    def instructions(dump, inside="evalGenericCommand"):
        report = subprocess.run(["callgrind_annotate", "--inclusive=yes", dump],
                                check=True, capture_output=True, text=True).stdout
        return next(int(l.split()[0].replace(",", "")) for l in report.split("\n")
                    if inside in l)

    what = f"{args.rev or 'working tree'} {args.phase}, payload {args.payload} B, " \
        f"TTL {args.ttl} ms:"
    if args.phase == "batch":
        # two dumps a round: produce.lua's call, then the MULTI
        both = [sorted(instructions(f"{out}.{d}", "processInputBuffer")
                       for d in range(first, 2 * n + 1, 2)) for first in (1, 2)]
        lua, multi = (counts[n // 2] / args.batch / 1000 for counts in both)
        print(f"{what} {args.batch} messages a call, the median of {n} calls: {lua:.1f}k "
              f"instructions a message through produce.lua, {multi:.1f}k by MULTI and "
              f"batch.lua (every command of the call, parsing included)")
    elif args.phase == "burst":
        # two dumps a round: its sends, then its fetches
        sends = sum(instructions(f"{out}.{d}") for d in range(1, 2 * n, 2))
        fetches = sum(instructions(f"{out}.{d}") for d in range(2, 2 * n + 1, 2))
        print(f"{what} {sends / messages / 1000:.1f}k instructions per message inside "
              f"EVALSHA in the sends, {fetches / messages / 1000:.1f}k in the fetches "
              f"({messages} messages)")
    else:
        inside = instructions(f"{out}.1")
        print(f"{what} {inside / messages / 1000:.1f}k instructions per "
              f"{'call' if args.phase == 'idle' else 'message'} inside EVALSHA ({messages} "
              f"{'calls' if args.phase == 'idle' else 'messages'})")
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

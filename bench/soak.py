#!/usr/bin/env python3
"""Soak test for `apop serve`: many concurrent POP3 sessions (one account each)
looping connect, APOP, STAT, RETR, QUIT for a long time, plus an attacker
sending wrong APOP digests from another loopback address, while the server's
memory and descriptors are sampled. The CI-sized version is
tests/interop/test_load.py; both use tests/interop/loadgen.py.

    bench/soak.py --sessions 2000 --seconds 600 [--apop build/release/apop]

Prints the figures every --report seconds (one round each) and a summary;
exits 1 if a legitimate session failed, the attacker got in, descriptors did
not return to their starting count, or RSS grew by more than --max-growth
between the first and the last round (a leak).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "interop"))

import loadgen  # noqa: E402
from apoptest import ALICE_SECRET, ApopEnv  # noqa: E402
from test_load import server_flags  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=1000, help="concurrent clients (accounts)")
    ap.add_argument("--seconds", type=float, default=300, help="total duration")
    ap.add_argument("--report", type=float, default=60, help="seconds per round")
    ap.add_argument("--attackers", type=int, default=50, help="attacker connections")
    ap.add_argument("--messages", type=int, default=3, help="messages per account")
    ap.add_argument("--apop", help="apop binary (default: $APOP_BIN or build/dev/apop)")
    ap.add_argument("--max-growth", type=float, default=0.25,
                    help="largest allowed RSS growth from the first to the last round")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()
    if args.apop:
        os.environ["APOP_BIN"] = os.path.abspath(args.apop)

    limit = loadgen.raise_nofile(4 * args.sessions + 1024)
    env = ApopEnv()
    ok = True
    try:
        print(f"soak: RLIMIT_NOFILE {limit}; provisioning {args.sessions} accounts in "
              f"{env.root}", flush=True)
        names = [f"soak{i:05d}" for i in range(args.sessions)]
        mail = loadgen.provision(env, names, ALICE_SECRET, args.messages, random.Random(1))
        srv = env.server(*server_flags(args.sessions))
        srv.start()
        with srv.connect() as c:
            c.login(names[0], ALICE_SECRET)
            c.quit()
        time.sleep(0.2)
        fds_before = loadgen.fd_count(srv.pid)
        rounds = max(1, round(args.seconds / args.report))
        peaks = []
        total = loadgen.Figures()
        for r in range(rounds):
            f = loadgen.run(srv.port, srv.pid, mail, ALICE_SECRET, args.report,
                            attackers=args.attackers, seed=r)
            f.fds_end = loadgen.settle_fds(srv.pid, fds_before)
            f.rss_end_kib = loadgen.rss_kib(srv.pid)
            peaks.append(f.rss_peak_kib)
            print(f"round {r + 1}/{rounds}: {f.summary()}", flush=True)
            for s in f.failure_samples:
                print(f"  failure: {s}")
            total.sessions += f.sessions
            total.failures += f.failures
            total.attacker_attempts += f.attacker_attempts
            total.attacker_ok += f.attacker_ok
            total.seconds += f.seconds
            if f.failures or f.attacker_ok or f.fds_end != fds_before:
                ok = False
        growth = (peaks[-1] - peaks[0]) / peaks[0] if peaks[0] else 0
        if len(peaks) > 1 and growth > args.max_growth:
            ok = False
        log = srv.log()
        throttled = log.count("reason=throttled")
        blocked = log.count("reason=blocked")
        srv.stop()
        print(f"soak: {total.sessions} sessions in {total.seconds:.0f} s, {total.failures} "
              f"failures; attacker {total.attacker_attempts} wrong digests, "
              f"{total.attacker_ok} accepted; log: {throttled} throttled, {blocked} blocked; "
              f"peak RSS per round (MiB): {[round(p / 1024, 1) for p in peaks]} "
              f"(growth {growth * 100:.1f}%); descriptors back to {fds_before}: "
              f"{'yes' if ok else 'see rounds'}")
        if blocked == 0:
            ok = False
    finally:
        if args.keep:
            print(f"soak: data kept in {env.root}")
        else:
            env.cleanup()
    print("soak: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

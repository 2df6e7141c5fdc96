#!/usr/bin/env python3
"""Measures the system calls `apop serve` makes after start-up, to build and
check the workers' seccomp allow-list (src/net/sandbox.cpp,
docs/security.md "Worker sandbox").

Runs interop test modules with APOP_BIN set to a wrapper that puts every
`apop serve` under `strace -f` (attached to the wrapper's shell, which then
execs apop: the server keeps its own pid, so SIGKILL tests work), then
counts the calls made after the log line matching --after, sets apart those
on the SQLite files (users.sqlite*, by path and descriptor), and names the
calls that src/net/sandbox.cpp does not allow in any of its sets. (SQLite's
fdatasync of the data directory, after a journal, counts with the rest: the
directory is not a users.sqlite* file.)

  scripts/syscall_profile.py --apop build/dev/apop test_poplib test_tls test_mbox

Needs strace. Traces stay in --keep DIR when given."""
import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRAPPER = """#!/bin/bash
if [ "$1" != serve ]; then exec {apop} "$@"; fi
strace -f -tt -qq -s 64 -o {out}/trace.$$ -p $$ 2>/dev/null &
for i in $(seq 300); do
  grep -q "^TracerPid:[[:space:]]*[1-9]" /proc/$$/status && break
  sleep 0.01
done
exec {apop} "$@"
"""

CALL = re.compile(r"^(\d+)\s+\S+\s+(\w+)\((.*)$")
RESUMED = re.compile(r"^(\d+)\s+\S+\s+<\.\.\. (\w+) resumed>(.*)$")
FD_FIRST = {"pread64", "pwrite64", "fcntl", "fdatasync", "fsync", "ftruncate", "lseek", "close",
            "read", "write", "fchown", "fchmod", "flock"}


def allowed_by_sandbox() -> set[str]:
    with open(os.path.join(REPO, "src", "net", "sandbox.cpp")) as f:
        return set(re.findall(r"APOP_SYS\((\w+)\)", f.read()))


def profile(trace_dir: str, after: str):
    rest, sqlite = collections.Counter(), collections.Counter()
    detail = collections.defaultdict(collections.Counter)
    for path in sorted(glob.glob(os.path.join(trace_dir, "trace.*"))):
        started, sq_fds, pending = False, set(), {}
        for line in open(path, errors="replace"):
            r = RESUMED.match(line)
            if r:
                tid, name, tail = r.groups()
                m = re.search(r"= (\d+)$", tail.strip())
                if name == "openat" and tid in pending and m:
                    sq_fds.add(m.group(1))
                pending.pop(tid, None)
                continue
            m = CALL.match(line)
            if not m:
                continue
            tid, name, args = m.groups()
            if not started:
                started = re.search(after, line) is not None
            if name == "openat" and ".sqlite" in args:
                ret = re.search(r"= (\d+)$", args.strip())
                if ret:
                    sq_fds.add(ret.group(1))
                elif "unfinished" in args:
                    pending[tid] = True
            if not started:
                continue
            a = args.split(", ")
            fd = a[0].rstrip(")")
            on_sqlite = ".sqlite" in args or (name in FD_FIRST and fd in sq_fds)
            if name == "close":
                sq_fds.discard(fd)
            (sqlite if on_sqlite else rest)[name] += 1
            if not on_sqlite and name in ("ioctl", "fcntl", "prctl", "setsockopt") and len(a) > 1:
                key = a[0] if name == "prctl" else a[1] if name != "setsockopt" else ",".join(a[1:3])
                detail[name][key.split(")")[0]] += 1
    return rest, sqlite, detail


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--apop", default=os.path.join(REPO, "build", "dev", "apop"))
    ap.add_argument("--after", default=r"serving data=",
                    help="count the calls after the first trace line matching this (default: "
                         "the server's 'serving' log line)")
    ap.add_argument("--keep", help="directory for the traces (default: a temporary one)")
    ap.add_argument("tests", nargs="+", help="interop test modules (tests/interop)")
    args = ap.parse_args()
    if shutil.which("strace") is None:
        print("syscall_profile: strace is not installed", file=sys.stderr)
        return 1
    out = args.keep or tempfile.mkdtemp(prefix="apop-syscalls-")
    os.makedirs(out, exist_ok=True)
    wrapper = os.path.join(out, "apop-strace")
    with open(wrapper, "w") as f:
        f.write(WRAPPER.format(apop=os.path.abspath(args.apop), out=out))
    os.chmod(wrapper, 0o755)
    run = subprocess.run([sys.executable, "-m", "unittest", *args.tests],
                         cwd=os.path.join(REPO, "tests", "interop"),
                         env=dict(os.environ, APOP_BIN=wrapper))
    rest, sqlite, detail = profile(out, args.after)
    allowed = allowed_by_sandbox()
    print(f"traces: {len(glob.glob(os.path.join(out, 'trace.*')))} servers in {out}")
    print("\n== after start-up, not on the SQLite files ==")
    for name, n in sorted(rest.items()):
        flag = "" if name in allowed else "   <-- not in src/net/sandbox.cpp"
        extra = " ".join(f"{k}:{v}" for k, v in sorted(detail[name].items()))
        print(f"{name:20} {n:8}{flag}  {extra}")
    print("\n== on the SQLite files (SandboxOptions::sqlite) ==")
    for name, n in sorted(sqlite.items()):
        print(f"{name:20} {n:8}")
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())

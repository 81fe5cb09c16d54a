#!/usr/bin/env python3
"""A fleet of two sources on this machine (host ":") planned by `storemove plan` and run by GNU
parallel: per-source slots, a failed run completed by `parallel --resume-failed`, a full rerun
that moves nothing, the merged `storemove report`, and hostile names that must not reach a shell.

Usage: fleet_test.py --storemove BIN [--corpus DIR]
Exit status 77 (ctest SKIP_RETURN_CODE) when GNU parallel or flock is missing. The ssh variant,
with hosts in network namespaces, is fleet_ssh_test.py.
"""

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile

from fleet_support import (GROUPS_CONF, Serve, fail, joblog_rows, log, make_source, parallel_env, plan, report, run,
                           run_parallel, skip, user_count, verify)


def max_concurrency(events_file):
    """Per store: the most migrates that ran at once, from the wrapper's start/end lines."""
    running, most = {}, {}
    with open(events_file) as f:
        for line in f:
            what, store = line.rstrip("\n").split(" ", 1)
            running[store] = running.get(store, 0) + (1 if what == "start" else -1)
            most[store] = max(most.get(store, 0), running[store])
    return most


def has_open(pid, path):
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == path:
                return True
        except OSError:
            pass
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--storemove", required=True)
    ap.add_argument("--corpus")
    args = ap.parse_args()
    for tool in ("parallel", "flock"):
        if not shutil.which(tool):
            skip("no %s on PATH (apt-get install parallel util-linux)" % tool)
    storemove = os.path.abspath(args.storemove)
    tmp = tempfile.mkdtemp(prefix="fleet-test-")
    serves = []
    try:
        env = parallel_env(tmp)
        # A store path a shell would expand, split or glob, and that GNU parallel would replace
        # ({}), if any layer of quoting were missing.
        hostile = os.path.join(tmp, "src one 'it''s' $(touch PWNED) `touch PWNED2` {} {=1=} ;x")
        plain = os.path.join(tmp, "src2")
        # The fleet's groups file is shared by its back-ends: group e is another back-end's and
        # holds nobody here. Its job must be done (users 0), not refused as a typo (it was: exit
        # 64 at every rerun, the fleet never done; helper-72).
        make_source(storemove, hostile, 24, 4, seed=11, corpus=args.corpus,
                    groups_conf=GROUPS_CONF + "e=other-backend-[0-9]+\n")
        make_source(storemove, plain, 16, 4, seed=12, corpus=args.corpus)
        key = os.path.join(tmp, "fleet.key")
        run([storemove, "keygen", key])
        for d in ("dst1", "dst2"):
            run([storemove, "init", "--store", os.path.join(tmp, d)])
        serves.append(Serve(storemove, os.path.join(tmp, "dst1"), key, "127.0.0.1:0"))
        # dst2's server is down for the first run: its jobs fail, --resume-failed completes them.
        down = Serve(storemove, os.path.join(tmp, "dst2"), key, "127.0.0.1:0")
        dst2_endpoint = down.endpoint
        down.stop()

        # The wrapper records when each migrate starts and ends, to check the per-source slots.
        events = os.path.join(tmp, "events")
        wrapper = os.path.join(tmp, "storemove-logged")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\nstore=$(printf %%s "$3")\necho "start $store" >> %s\n"%s" "$@"\nrc=$?\n'
                    'echo "end $store" >> %s\nexit $rc\n' % (events, storemove, events))
        os.chmod(wrapper, 0o755)
        fleet = {"sources": [
            {"host": ":", "store": hostile, "to": serves[0].endpoint, "key": key, "jobs": 2, "storemove": wrapper},
            {"host": ":", "store": plain, "to": dst2_endpoint, "key": key, "jobs": 1, "groups": ["d", "c", "b", "a"],
             "storemove": wrapper},
        ]}
        results = os.path.join(tmp, "results")
        jobs = plan(storemove, fleet, os.path.join(tmp, "fleet.json"), results, env=env)
        lines = jobs.splitlines()
        if len(lines) != 9:
            fail("expected 9 job lines (5 + 4 groups), got %d:\n%s" % (len(lines), jobs))
        # Round robin over the sources, the second source's groups in the fleet file's order.
        if not (" -- 'a'" in lines[0] and " -- 'd'" in lines[1] and " -- 'c'" in lines[3]):
            fail("jobs not interleaved by source:\n" + jobs)
        jobs_file = os.path.join(tmp, "jobs")
        with open(jobs_file, "w") as f:
            f.write(jobs)
        joblog = os.path.join(tmp, "joblog")

        log("run 1: dst2 down")
        status, out, err = run_parallel(jobs_file, joblog, 6, env)
        if status != 4:
            fail("parallel: expected 4 failed jobs (dst2 is down), exit %d\n%s\n%s" % (status, out, err))
        merged = report(storemove, results, expect_ok=False)
        if merged["groups_failed"] != 4 or len(merged["failed_groups"]) != 4:
            fail("report: expected 4 failed groups: %s" % json.dumps(merged))
        if any("_src2_" not in g["file"] for g in merged["failed_groups"]):
            fail("report: a failed group that is not dst2's: %s" % json.dumps(merged["failed_groups"]))
        # A broken file and a partial one are named, not skipped.
        with open(os.path.join(results, "broken.json"), "w") as f:
            f.write('{"ok": true, "groups": [')
        open(os.path.join(results, "cut.json.part"), "w").close()
        status, out, err = run([storemove, "report", results], check=False)
        if status != 1 or "BROKEN broken.json: not valid JSON" not in out or "BROKEN cut.json.part: partial" not in out \
                or err.count("\n") != 2:
            fail("report did not name the broken and partial files (exit %d):\n%s%s" % (status, out, err))
        os.unlink(os.path.join(results, "broken.json"))
        os.unlink(os.path.join(results, "cut.json.part"))

        log("run 2: --resume-failed with dst2 up")
        serves.append(Serve(storemove, os.path.join(tmp, "dst2"), key, dst2_endpoint))
        status, out, err = run_parallel(jobs_file, joblog, 6, env, resume_failed=True)
        if status != 0:
            fail("parallel --resume-failed exit %d\n%s\n%s" % (status, out, err))
        rows = joblog_rows(joblog)
        if len(rows) != 13 or sum(1 for r in rows if r["Exitval"] != "0") != 4:
            fail("joblog: expected 9 first runs (4 failed) and 4 reruns: %s" % rows)
        verify(storemove, os.path.join(tmp, "dst1"), hostile)
        verify(storemove, os.path.join(tmp, "dst2"), plain)
        total = user_count(storemove, hostile) + user_count(storemove, plain)
        merged = report(storemove, results, expect_ok=True)
        if merged["users"] != total or merged["already_moved"] != 0 or merged["messages"] == 0:
            fail("report after resume: %d users expected once each: %s" % (total, json.dumps(merged)))
        # src2's groups ran in the order d, c, b, a, d (".*") first: each took only the users
        # whose first matching group in backup-groups.conf it is.
        _, listing, _ = run([storemove, "list", "--store", plain, "--json"])
        patterns = [line.split("=", 1) for line in GROUPS_CONF.splitlines() if "=" in line]
        expected = {}
        for user in {m["user"] for m in json.loads(listing)}:
            first = next(name for name, regex in patterns if re.fullmatch(regex, user))
            expected[first] = expected.get(first, 0) + 1
        for name in os.listdir(results):
            if "_src2_" in name and name.endswith(".json"):
                with open(os.path.join(results, name)) as f:
                    g = json.load(f)["groups"][0]
                if g["users"] + g["already_moved"] != expected.get(g["name"], 0):
                    fail("src2 group %s moved %d users, %d expected (first match): %s"
                         % (g["name"], g["users"], expected.get(g["name"], 0), expected))
        reports = sorted(os.listdir(results))
        if len([r for r in reports if r.endswith(".json")]) != 9:
            fail("expected 9 reports: %s" % reports)
        empty = [r for r in reports if r.endswith(".json") and "_src2_" not in r and r.rsplit("-", 1)[0].endswith("_e")]
        with open(os.path.join(results, empty[0]) if len(empty) == 1 else os.devnull) as f:
            e = json.load(f) if len(empty) == 1 else None
        if not e or e["ok"] is not True or e["groups"][0]["users"] != 0:
            fail("the group that holds nobody here: %s" % e)

        log("run 3: everything again moves nothing")
        status, out, err = run_parallel(jobs_file, os.path.join(tmp, "joblog3"), 6, env)
        if status != 0:
            fail("full rerun exit %d\n%s\n%s" % (status, out, err))
        merged = report(storemove, results, expect_ok=True)
        if merged["users"] != 0 or merged["already_moved"] != total or merged["messages"] != 0:
            fail("rerun moved something: %s" % json.dumps(merged))
        if sorted(os.listdir(results)) != reports:
            fail("rerun changed the report files: %s -> %s" % (reports, sorted(os.listdir(results))))
        verify(storemove, os.path.join(tmp, "dst1"), hostile)

        log("group locks: a busy group is refused with a report, --lock-wait waits for it")
        lock_path = os.path.join(plain, "migrate-journal", "a.lock")
        lock_fd = os.open(lock_path, os.O_RDWR)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        busy_report = os.path.join(tmp, "busy.json")
        migrate = [storemove, "migrate", "--store", plain, "--to", dst2_endpoint, "--key", key, "--report", busy_report]
        status, out, err = run(migrate + ["--", "a"], check=False)
        with open(busy_report) as f:
            busy = json.load(f)
        if status != 75 or "another storemove migrate is running on" not in err or busy["ok"] is not False \
                or busy["exit_status"] != 75 or busy["groups_requested"] != ["a"]:
            fail("a busy group: exit %d, %s, report %s" % (status, err, busy))
        # Other groups of the store are not held up by it.
        # (uncompressed: the sessions' other setting, end to end)
        run(migrate + ["--compress", "none", "--", "b"])
        waiting = subprocess.Popen(migrate + ["--lock-wait", "60", "--", "a"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        # Released once the migrate has the lock file open (it is then trying the lock): it can
        # only succeed by waiting, since without waiting it fails at once (75).
        while not has_open(waiting.pid, lock_path):
            if waiting.poll() is not None:
                fail("migrate --lock-wait ended before it waited: %s" % waiting.communicate())
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
        out, err = waiting.communicate(timeout=120)
        if waiting.returncode != 0:
            fail("migrate --lock-wait: exit %d: %s" % (waiting.returncode, err))

        most = max_concurrency(events)
        if most.get(hostile, 0) > 2 or most.get(plain, 0) > 1 or not most:
            fail("per-source slots exceeded (jobs 2 and 1): %s" % most)
        for bad in ("PWNED", "PWNED2"):
            if os.path.exists(os.path.join(tmp, bad)) or os.path.exists(bad):
                fail("a store name was run by a shell: %s exists" % bad)
        log("fleet: 2 sources, 9 jobs, resume and rerun idempotent, at most %s migrates per source at once" % most)
    finally:
        for s in serves:
            s.stop()
        if os.environ.get("FLEET_TEST_KEEP"):
            log("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

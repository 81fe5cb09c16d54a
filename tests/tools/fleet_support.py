"""What the fleet tests share: stores, serve processes, the plan run by GNU parallel, checks.

Every process is started by the test and stopped by its pid. GNU parallel's per-user state
(~/.parallel: the citation notice) lives in a HOME inside the test's temporary directory.
"""

import json
import os
import shutil
import subprocess
import sys

SKIP = 77

# Four groups by the first character of the user ids (generated or from the corpus); d takes the rest.
GROUPS_CONF = "# fleet test\na=[a-f0-2].*\nb=[g-m3-5].*\nc=[n-s6-7].*\nd=.*\n"


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def skip(message):
    print("SKIP: " + message, flush=True)
    sys.exit(SKIP)


def log(message):
    print(message, flush=True)


def run(args, check=True, env=None, stdin=None, prefix=()):
    """Runs args (a list), returns (status, stdout, stderr)."""
    p = subprocess.run(list(prefix) + list(args), capture_output=True, text=True, env=env, stdin=stdin)
    if check and p.returncode != 0:
        fail("%s exited %d: %s%s" % (" ".join(args), p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    return p.returncode, p.stdout, p.stderr


def make_source(storemove, store, users, messages, seed, corpus=None, groups_conf=GROUPS_CONF):
    args = [storemove, "gen", "--store", store, "--users", str(users), "--messages-per-user", str(messages),
            "--seed", str(seed), "--dup-rate", "0.2"]
    if corpus and os.path.isdir(corpus):
        args += ["--corpus", corpus]
    run(args)
    with open(os.path.join(store, "config", "backup-groups.conf"), "w") as f:
        f.write(groups_conf)


class Serve:
    """storemove serve on ADDR:0 (or a fixed port), the bound endpoint read from its log."""

    def __init__(self, storemove, store, key, listen, prefix=()):
        self.args = list(prefix) + [storemove, "serve", "--store", store, "--listen", listen, "--key", key]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.endpoint = None
        for line in self.proc.stderr:
            if "listening on " in line:
                self.endpoint = line.split("listening on ", 1)[1].split()[0]
                break
        if not self.endpoint:
            self.proc.wait()
            fail("serve %s did not listen (exit %s)" % (store, self.proc.returncode))
        # Its later log lines are drained so that a full pipe never blocks it.
        import threading
        self.lines = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def parallel_env(tmp, extra_path=None):
    env = dict(os.environ)
    env["HOME"] = os.path.join(tmp, "home")
    os.makedirs(os.path.join(env["HOME"], ".parallel"), exist_ok=True)
    open(os.path.join(env["HOME"], ".parallel", "will-cite"), "w").close()
    env["SHELL"] = "/bin/bash"  # the job lines are POSIX sh; parallel runs them with $SHELL
    if extra_path:
        env["PATH"] = extra_path + ":" + env["PATH"]
    return env


def plan(storemove, fleet, fleet_file, results, env=None, prefix=()):
    with open(fleet_file, "w") as f:
        json.dump(fleet, f, indent=2)
    _, jobs, err = run([storemove, "plan", "--fleet", fleet_file, "--results", results, "--lock-wait", "60"],
                       env=env, prefix=prefix)
    if "parallel --joblog" not in err:
        fail("plan gave no advice on stderr: " + err)
    return jobs


def run_parallel(jobs_file, joblog, jobs, env, resume_failed=False, prefix=()):
    args = ["parallel", "--joblog", joblog, "-j", str(jobs)]
    if resume_failed:
        args.append("--resume-failed")
    with open(jobs_file) as stdin:
        status, out, err = run(args, check=False, env=env, stdin=stdin, prefix=prefix)
    return status, out, err


def joblog_rows(joblog):
    rows = []
    with open(joblog) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            rows.append(dict(zip(header, line.rstrip("\n").split("\t", len(header) - 1))))
    return rows


def report(storemove, results, expect_ok):
    status, out, err = run([storemove, "report", results, "--json"], check=False)
    if status not in (0, 1):
        fail("report exited %d: %s" % (status, err))
    merged = json.loads(out)
    if merged["ok"] != expect_ok or (status == 0) != expect_ok:
        fail("report ok=%s exit %d, expected ok=%s: %s %s" % (merged["ok"], status, expect_ok, out, err))
    return merged


def verify(storemove, destination, source):
    """The destination holds exactly the source's users (every message's bytes, flags, folders)."""
    status, out, err = run([storemove, "verify", "--store", destination, "--source", source], check=False)
    if status != 0:
        fail("verify %s against %s: exit %d: %s %s" % (destination, source, status, out[-3000:], err[-2000:]))


def user_count(storemove, store):
    _, out, _ = run([storemove, "list", "--store", store, "--json"])
    return len({m["user"] for m in json.loads(out)})


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)

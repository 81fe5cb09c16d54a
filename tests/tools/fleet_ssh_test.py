#!/usr/bin/env python3
"""A fleet migration over real ssh: two source hosts and two destination hosts in network
namespaces of this machine, the plan run by GNU parallel from a controller namespace, one job's
migrate killed with -9 while its users are held, another job's ssh killed with -9, and
`parallel --resume-failed` completing the fleet with nothing duplicated; every destination then
equals its source, and a full rerun moves nothing.

Usage: fleet_ssh_test.py --storemove BIN [--corpus DIR]
Exit status 77 (ctest SKIP_RETURN_CODE) when not root, or no sshd, ssh, GNU parallel, flock or
network namespaces. FLEET_TEST_KEEP=1 keeps the temporary directory.

Network: namespace CTL holds a bridge (10.77.N.1/24); hosts src1, src2 (.11, .12: sshd) and
dst1, dst2 (.21, .22: storemove serve) each have a veth pair to it. Nothing is set up in the
root namespace, and everything is deleted at the end.

ssh: the test makes a user key and host keys with ssh-keygen; each source runs /usr/sbin/sshd
with its own sshd_config (its host key, AuthorizedKeysFile in the test directory with a
`restrict` key, StrictModes and PAM off). The client side is the real ssh with a test config
(-F, known hosts checked strictly): an `ssh` script first on PATH adds -F, since ssh reads
~/.ssh from the password database, not from $HOME.

The kills are placed with migrate's hold seam (STOREMOVE_TEST_HOLD_FD): the fleet's "storemove"
command on a source is a wrapper that, for the first job only, connects to a unix socket of the
test and hands it to migrate as that fd, so the test learns "hold GROUP" and the migrate's pid
(SO_PEERCRED) at the point where its users are held.
"""

import argparse
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading

from fleet_support import (Serve, fail, joblog_rows, log, make_source, parallel_env, plan, report, run,
                           run_parallel, skip, user_count, verify)

HOSTS = {"src1": 11, "src2": 12, "dst1": 21, "dst2": 22}


class Net:
    def __init__(self, tag, subnet):
        self.tag, self.subnet = tag, subnet
        self.ctl = tag + "-ctl"
        self.made = []

    def ns(self, host):
        return self.tag + "-" + host

    def addr(self, host):
        return "10.77.%d.%d" % (self.subnet, HOSTS[host])

    def up(self):
        """Namespaces, bridge and veth pairs; a kernel without them is a skip, not a failure."""
        def must(args):
            status, _, err = run(args, check=False)
            if status != 0:
                self.down()
                skip("cannot set up the test network (%s): %s" % (" ".join(args), err.strip()))
        must(["ip", "netns", "add", self.ctl])
        self.made.append(self.ctl)
        ctl = ["ip", "netns", "exec", self.ctl]
        must(ctl + ["ip", "link", "set", "lo", "up"])
        must(ctl + ["ip", "link", "add", "br0", "type", "bridge"])
        must(ctl + ["ip", "addr", "add", "10.77.%d.1/24" % self.subnet, "dev", "br0"])
        must(ctl + ["ip", "link", "set", "br0", "up"])
        for host in HOSTS:
            ns = self.ns(host)
            must(["ip", "netns", "add", ns])
            self.made.append(ns)
            # Made inside the host's namespace, one end moved to the controller's: no name ever
            # exists in the root namespace.
            inside = ["ip", "netns", "exec", ns]
            must(inside + ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "to-" + host])
            must(inside + ["ip", "link", "set", "to-" + host, "netns", self.ctl])
            must(inside + ["ip", "link", "set", "lo", "up"])
            must(inside + ["ip", "addr", "add", self.addr(host) + "/24", "dev", "eth0"])
            must(inside + ["ip", "link", "set", "eth0", "up"])
            must(ctl + ["ip", "link", "set", "to-" + host, "master", "br0"])
            must(ctl + ["ip", "link", "set", "to-" + host, "up"])

    def down(self):
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def exec(self, host):
        return ["ip", "netns", "exec", self.ns(host) if host != "ctl" else self.ctl]


class Sshd:
    def __init__(self, net, host, tmp):
        key = os.path.join(tmp, "host_key_" + host)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
        config = os.path.join(tmp, "sshd_config_" + host)
        with open(config, "w") as f:
            f.write("ListenAddress %s\nPort 22\nHostKey %s\nAuthorizedKeysFile %s\nStrictModes no\nUsePAM no\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
                    "PermitRootLogin prohibit-password\nPidFile none\nLogLevel INFO\n"
                    % (net.addr(host), key, os.path.join(tmp, "authorized_keys")))
        self.proc = subprocess.Popen(net.exec(host) + ["/usr/sbin/sshd", "-D", "-e", "-f", config],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        for line in self.proc.stderr:
            self.log.append(line)
            if "Server listening on" in line:
                break
        else:
            self.proc.wait()
            fail("sshd on %s did not start: %s" % (host, "".join(self.log)))
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        with open(key + ".pub") as f:
            self.known_host = "%s %s" % (net.addr(host), " ".join(f.read().split()[:2]))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


class HoldSeam:
    """The unix socket the seam wrapper hands to the first migrate of a source as its hold fd."""

    def __init__(self, path, on_hold):
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.on_hold = on_hold
        self.seen = []
        self.error = None
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            conn, _ = self.listener.accept()
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid = struct.unpack("3i", creds)[0]
            line = b""
            while not line.endswith(b"\n"):
                chunk = conn.recv(100)
                if not chunk:
                    raise RuntimeError("the migrate closed the seam before its hold")
                line += chunk
            self.seen.append(line.decode().strip())
            self.on_hold(pid, conn)
        except Exception as e:  # reported by check()
            self.error = e

    def check(self, what):
        self.thread.join(timeout=60)
        if self.error or not self.seen:
            fail("%s: the hold seam saw %s (%s)" % (what, self.seen, self.error))
        return self.seen[0]


def seam_wrapper(tmp, name, storemove, sock):
    """The fleet's "storemove" command for a source: the first job gets the hold seam."""
    path = os.path.join(tmp, "storemove-" + name)
    claim = os.path.join(tmp, "seam-claim-" + name)
    open(claim, "w").close()
    seam = os.path.join(tmp, "seam-" + name + ".py")
    with open(seam, "w") as f:
        f.write("""import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(%(sock)r)
fd = s.detach()
os.set_inheritable(fd, True)
os.environ["STOREMOVE_TEST_HOLD_FD"] = str(fd)
os.execv(%(bin)r, [%(bin)r] + sys.argv[1:])
""" % {"bin": storemove, "sock": sock})
    # A rename is atomic: one job only claims the seam; the others run storemove itself.
    with open(path, "w") as f:
        f.write('#!/bin/sh\nif mv -- "%s" "%s.taken" 2>/dev/null; then exec python3 "%s" "$@"; fi\nexec "%s" "$@"\n'
                % (claim, claim, seam, storemove))
    os.chmod(path, 0o755)
    return path


def ssh_client_pids(host_alias, group):
    """The controller's ssh processes running the job of `group` on `host_alias` (ours)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] == b"/usr/bin/ssh" and host_alias.encode() in argv and \
                any(a.endswith(b"-- '" + group.encode() + b"'") for a in argv):
            pids.append(int(entry))
    return pids


def job_of(command):
    """"GROUP@HOST" of a job line (the group is quoted twice: for the local and the remote shell)."""
    m = re.search(r"BatchMode=yes -- '([^']+)' .*-- '\\''([A-Za-z0-9_-]+)'\\''", command)
    if not m:
        fail("cannot read the host and group of job line: " + command)
    return m.group(2) + "@" + m.group(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--storemove", required=True)
    ap.add_argument("--corpus")
    args = ap.parse_args()
    if os.geteuid() != 0:
        skip("not root: network namespaces and sshd need root")
    for tool in ("/usr/sbin/sshd", "ssh", "ssh-keygen", "parallel", "flock", "ip"):
        if not shutil.which(tool):
            skip("no %s (apt-get install openssh-server openssh-client parallel iproute2)" % tool)
    probe = "smfleet-probe-%d" % os.getpid()
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        skip("no network namespace support (ip netns add failed)")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    storemove = os.path.abspath(args.storemove)
    tmp = tempfile.mkdtemp(prefix="fleet-ssh-test-")
    os.chmod(tmp, 0o755)
    net = Net("smf%d" % os.getpid(), 100 + os.getpid() % 100)
    made_run_sshd = False
    procs = []
    try:
        if not os.path.isdir("/run/sshd"):  # sshd's privilege separation directory, as its unit makes it
            os.makedirs("/run/sshd", 0o755)
            made_run_sshd = True
        net.up()
        user_key = os.path.join(tmp, "id_fleet")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", user_key])
        with open(user_key + ".pub") as f, open(os.path.join(tmp, "authorized_keys"), "w") as out:
            out.write("restrict " + f.read())
        for host in ("src1", "src2"):
            procs.append(Sshd(net, host, tmp))
        with open(os.path.join(tmp, "known_hosts"), "w") as f:
            f.write("".join(p.known_host + "\n" for p in procs))
        with open(os.path.join(tmp, "ssh_config"), "w") as f:
            for host in ("src1", "src2"):
                f.write("Host %s\n  HostName %s\n" % (host, net.addr(host)))
            f.write("Host *\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n"
                    "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  ConnectTimeout 10\n"
                    % (user_key, os.path.join(tmp, "known_hosts")))
        bindir = os.path.join(tmp, "bin")
        os.makedirs(bindir)
        with open(os.path.join(bindir, "ssh"), "w") as f:
            f.write('#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' % os.path.join(tmp, "ssh_config"))
        os.chmod(os.path.join(bindir, "ssh"), 0o755)
        env = parallel_env(tmp, extra_path=bindir)
        ctl = net.exec("ctl")

        key = os.path.join(tmp, "fleet.key")
        run([storemove, "keygen", key])
        serves = {}
        for i, host in enumerate(("src1", "src2")):
            make_source(storemove, os.path.join(tmp, host), 30, 5, seed=21 + i, corpus=args.corpus)
        for host in ("dst1", "dst2"):
            run([storemove, "init", "--store", os.path.join(tmp, host)])
            serves[host] = Serve(storemove, os.path.join(tmp, host), key, net.addr(host) + ":7070",
                                 prefix=net.exec(host))
            procs.append(serves[host])

        # src1's first job: its migrate is killed with -9 once its users are held.
        def kill_migrate(pid, conn):
            os.kill(pid, 9)

        # src2's first job: its ssh is killed with -9 while the users are held; then the migrate,
        # orphaned on src2, is let go: it finishes the group, but its report has nowhere to go.
        killed_ssh = []

        def kill_ssh(pid, conn):
            group = seam2.seen[0].split()[1]
            pids = ssh_client_pids("src2", group)
            for p in pids:
                os.kill(p, 9)
            killed_ssh.extend(pids)
            conn.sendall(b"x")
            conn.close()

        seam1 = HoldSeam(os.path.join(tmp, "seam1.sock"), kill_migrate)
        seam2 = HoldSeam(os.path.join(tmp, "seam2.sock"), kill_ssh)
        fleet = {"sources": [
            {"host": "src1", "store": os.path.join(tmp, "src1"), "to": net.addr("dst1") + ":7070", "key": key,
             "jobs": 2, "storemove": seam_wrapper(tmp, "src1", storemove, seam1.path)},
            {"host": "src2", "store": os.path.join(tmp, "src2"), "to": net.addr("dst2") + ":7070", "key": key,
             "jobs": 2, "storemove": seam_wrapper(tmp, "src2", storemove, seam2.path)},
        ]}
        results = os.path.join(tmp, "results")
        # The plan reads each source's backup-groups.conf over ssh.
        jobs = plan(storemove, fleet, os.path.join(tmp, "fleet.json"), results, env=env, prefix=ctl)
        if len(jobs.splitlines()) != 8 or jobs.count("ssh -n -o BatchMode=yes -- 'src") != 8:
            fail("expected 8 ssh jobs:\n" + jobs)
        jobs_file = os.path.join(tmp, "jobs")
        with open(jobs_file, "w") as f:
            f.write(jobs)
        joblog = os.path.join(tmp, "joblog")

        log("run 1: kill -9 of one migrate (src1) and of one ssh (src2) while their users are held")
        status, out, err = run_parallel(jobs_file, joblog, 4, env, prefix=ctl)
        held1 = seam1.check("src1")
        held2 = seam2.check("src2")
        if not killed_ssh:
            fail("found no ssh process of src2's %s job to kill" % held2)
        failed = [r for r in joblog_rows(joblog) if r["Exitval"] != "0"]
        # The two killed jobs fail. A process killed with -9 while it has the Berkeley DB
        # environment open can also fail a migrate of another group of the same store running at
        # that moment (the environment needs recovery; docs/fleet.md): then that job fails too.
        failed_groups = {job_of(r["Command"]) for r in failed}
        if status != len(failed) or len(failed) < 2 or not {held1.split()[1] + "@src1", held2.split()[1] + "@src2"} <= failed_groups:
            fail("parallel: expected the 2 killed jobs among the failed, exit %d, failed %s\n%s" % (status, failed, err))
        log("killed: src1 '%s' (migrate), src2 '%s' (ssh); failed jobs %s" % (held1, held2, sorted(failed_groups)))

        log("run 2: parallel --resume-failed")
        status, out, err = run_parallel(jobs_file, joblog, 4, env, resume_failed=True, prefix=ctl)
        if status != 0:
            fail("parallel --resume-failed exit %d\n%s\n%s" % (status, out, err))
        rows = joblog_rows(joblog)
        if len(rows) != 8 + len(failed):
            fail("joblog: expected 8 runs and %d reruns, got %d" % (len(failed), len(rows)))
        for host, src in (("dst1", "src1"), ("dst2", "src2")):
            verify(storemove, os.path.join(tmp, host), os.path.join(tmp, src))
        total = user_count(storemove, os.path.join(tmp, "src1")) + user_count(storemove, os.path.join(tmp, "src2"))
        merged = report(storemove, results, expect_ok=True)
        # The orphaned migrate of src2 finished its group without a report: the rerun found those
        # users moved. Every user is counted once, as moved or as already moved.
        if merged["users"] + merged["already_moved"] != total or merged["groups"] != 8:
            fail("report: %d users expected once each: %s" % (total, json.dumps(merged)))
        by_job = {}
        for name in os.listdir(results):
            if name.endswith(".json"):
                with open(os.path.join(results, name)) as f:
                    r = json.load(f)
                by_job[r["groups"][0]["name"] + "@" + name.split("_", 1)[0]] = r
        # src1's killed migrate: the next migrate on src1 (its rerun, or a job of another group
        # that started first) put the held users back from the journal; the rerun moved them.
        group1 = held1.split()[1]
        killed = by_job[group1 + "@src1"]
        recovered = [line for key, r in by_job.items() if key.endswith("@src1") for line in r["recovered"]]
        if not any(line.startswith("group %s: " % group1) and "put back" in line for line in recovered) \
                or killed["groups"][0]["users"] == 0:
            fail("src1's killed job: no journal recovered (%s) or the rerun moved nobody: %s"
                 % (recovered, json.dumps(killed)))
        # src2's cut ssh: the orphaned migrate finished the group; the rerun found its users moved.
        cut = by_job[held2.split()[1] + "@src2"]
        if cut["groups"][0]["users"] != 0 or cut["groups"][0]["already_moved"] == 0:
            fail("the rerun of src2's job whose ssh was killed moved users itself: %s" % json.dumps(cut))

        _, text, _ = run([storemove, "report", results])
        log(text.rstrip())

        log("run 3: everything again moves nothing, through one ssh master connection per host")
        # The set-up docs/fleet.md advises for thousands of jobs: ControlMaster, ControlPersist.
        with open(os.path.join(tmp, "ssh_config"), "a") as f:
            f.write("  ControlMaster auto\n  ControlPath %s/cm-%%C\n  ControlPersist 60\n" % tmp)
        status, out, err = run_parallel(jobs_file, os.path.join(tmp, "joblog3"), 4, env, prefix=ctl)
        masters = [run(["ssh", "-O", "check", host], check=False, env=env, prefix=ctl) for host in ("src1", "src2")]
        for host in ("src1", "src2"):
            run(["ssh", "-O", "exit", host], check=False, env=env, prefix=ctl)
        if status != 0:
            fail("full rerun exit %d\n%s\n%s" % (status, out, err))
        if any(m[0] != 0 for m in masters):
            fail("no ssh master connection was running: %s" % masters)
        merged = report(storemove, results, expect_ok=True)
        if merged["users"] != 0 or merged["already_moved"] != total:
            fail("rerun moved something: %s" % json.dumps(merged))
        for host, src in (("dst1", "src1"), ("dst2", "src2")):
            verify(storemove, os.path.join(tmp, host), os.path.join(tmp, src))
        log("fleet over ssh: 4 hosts in network namespaces, 8 jobs, 2 killed and resumed, destinations equal")
    finally:
        for p in reversed(procs):
            p.stop()
        net.down()
        if made_run_sshd:
            try:
                os.rmdir("/run/sshd")
            except OSError:
                pass
        if os.environ.get("FLEET_TEST_KEEP"):
            log("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

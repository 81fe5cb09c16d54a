#!/usr/bin/env python3
"""The key set-up dist/examples/serve.conf tells an administrator to do is one `storemove serve`
accepts (security review #07: it said chgrp storemove and chmod 0640, which serve refuses with
exit 77, so the unit never started). Its `install -m MODE -o USER -g GROUP` line is followed with
a key from keygen, and serve, run as that owner (as root: the user nobody stands in for
storemove), must listen. The shipped texts must not tell anyone to make a key group-readable.
Usage: serve_conf_test.py --storemove BIN --conf dist/examples/serve.conf [--docs FILE...]"""
import argparse
import os
import pwd
import re
import subprocess
import sys
import tempfile


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--storemove", required=True)
    parser.add_argument("--conf", required=True)
    parser.add_argument("--docs", nargs="*", default=[])
    args = parser.parse_args()
    failures = []

    for path in [args.conf, *args.docs]:
        for n, line in enumerate(open(path, encoding="utf-8"), 1):
            if re.search(r"chgrp|chmod 0?6[4-7]0", line):
                failures.append(f"{path}:{n}: a group-readable key, which serve refuses: {line.strip()}")

    conf = open(args.conf, encoding="utf-8").read()
    m = re.search(r"install -m (\d+) -o (\S+) -g (\S+) \S+ (\S*serve-NAME\.key)", conf)
    if not m:
        failures.append(f"{args.conf}: no `install -m MODE -o USER -g GROUP KEY /etc/storemove/serve-NAME.key` line")
    else:
        mode, owner = int(m.group(1), 8), m.group(2)
        # As root, serve runs as another user, as the unit does; otherwise as this one.
        user = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o755)
            key, store = f"{tmp}/serve-NAME.key", f"{tmp}/NAME"
            subprocess.run([args.storemove, "keygen", key], check=True, capture_output=True)
            subprocess.run([args.storemove, "init", "--store", store], check=True, capture_output=True)
            os.chmod(key, mode)
            if os.geteuid() == 0:
                subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", key, store], check=True)
                run_as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
            else:
                run_as = []
            r = subprocess.run(run_as + ["timeout", "3", args.storemove, "serve", "--store", store,
                                         "--listen", "127.0.0.1:0", "--key", key],
                               capture_output=True, text=True)
            if r.returncode != 124 or "listening on" not in r.stderr:
                failures.append(f"serve with the key installed as {args.conf} says (mode {mode:04o}, owner "
                                f"{owner} played by {user.pw_name}): exit {r.returncode}: {r.stderr.strip()}")

    for f in failures:
        print(f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""`storemove --version` names the project() version, and the JSON reports carry it as
"storemove_version": gen, relink, backup and restore (on stderr), verify, user, users, groups and
migrate --dry-run, on a real store.
Usage: version_test.py --storemove BIN --version X.Y.Z"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def run(binary, *args, stream="stdout"):
    env = dict(os.environ)
    env.pop("STOREMOVE_STORE", None)
    r = subprocess.run([binary, *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"storemove {' '.join(args)}: exit {r.returncode}: {r.stderr}")
    return getattr(r, stream)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--storemove", required=True)
    parser.add_argument("--version", required=True)
    args = parser.parse_args()
    b = args.storemove

    said = run(b, "--version").strip()
    if said != f"storemove {args.version}" and not said.startswith(f"storemove {args.version} (git "):
        print(f"--version says {said!r}, the project is {args.version}")
        return 1

    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        src, dst, stream = f"{tmp}/src", f"{tmp}/dst", f"{tmp}/backup"
        reports = {
            "gen": run(b, "gen", "--store", src, "--users", "3", "--messages-per-user", "4", "--dup-rate", "0.5", "--json"),
            "relink": run(b, "relink", "--store", src, "--json"),
            "backup": run(b, "backup", "--store", src, "-f", stream, "--json", stream="stderr"),
        }
        run(b, "init", "--store", dst)
        reports["restore"] = run(b, "restore", "--store", dst, "-f", stream, "--json", stream="stderr")
        reports["verify"] = run(b, "verify", "--store", dst, "--source", src, "--json")
        user = json.loads(run(b, "list", "--store", src, "--json"))[0]["user"]
        reports["user"] = run(b, "user", "--store", src, user, "--json")
        reports["users"] = run(b, "users", "--store", src, "--json")
        groups = f"{tmp}/groups.conf"
        with open(groups, "w") as f:
            f.write("everyone=.*\n")
        reports["groups"] = run(b, "groups", "--store", src, "--groups", groups, "--json")
        reports["migrate --dry-run"] = run(b, "migrate", "--store", src, "--groups", groups, "--to", "localhost:1",
                                           "--insecure", "--dry-run", "--json")
        for name, text in reports.items():
            try:
                report = json.loads(text.strip().splitlines()[-1] if name in ("backup", "restore") else text)
            except json.JSONDecodeError as e:
                failures.append(f"{name} --json is not JSON ({e}): {text!r}")
                continue
            if report.get("storemove_version") != args.version:
                failures.append(f"{name} --json: storemove_version is {report.get('storemove_version')!r}")
    if failures:
        print(*failures, sep="\n")
        return 1
    print(f"{said}; storemove_version {args.version} in", ", ".join(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())

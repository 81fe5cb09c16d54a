#!/usr/bin/env python3
"""The man page says what --help says: every subcommand `storemove --help` lists has a .SS section
of its name in docs/man/storemove.1, every long option `storemove SUB --help` prints appears in
that section, every top-level long option in OPTIONS, and no section names a subcommand that is
gone. Then the same check runs on copies of the page with one subcommand and one option removed,
which it must reject. Usage: man_test.py --storemove BIN --page docs/man/storemove.1"""
import argparse
import re
import shutil
import subprocess
import sys


def help_text(binary, *args):
    r = subprocess.run([binary, *args, "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{binary} {' '.join(args)} --help: exit {r.returncode}: {r.stderr}")
    return r.stdout


def section(text, title):
    """The lines of CLI11's `Title:` section (until the next unindented line)."""
    lines, on = [], False
    for line in text.splitlines():
        if line == title + ":":
            on = True
        elif on and line and not line.startswith(" "):
            on = False
        elif on:
            lines.append(line)
    return lines


def subcommands(binary):
    return [l.split()[0] for l in section(help_text(binary), "Subcommands") if re.match(r"^  [a-z]", l)]


def long_options(text):
    """--long names of the option lines ("  -f,--file FILE  ...")."""
    names = []
    for line in section(text, "Options"):
        if re.match(r"^  -", line):
            names += [n for n in line.split()[0].split(",") if n.startswith("--")]
    return names


def man_sections(page):
    """Plain text of the page's OPTIONS section and of each .SS subsection of SUBCOMMANDS."""
    text = re.sub(r"\\f[BIRP]", "", page).replace("\\-", "-").replace("\\&", "")
    out, current, in_subcommands = {}, None, False
    for line in text.splitlines():
        if line.startswith(".SH "):
            title = line[4:].strip().strip('"')
            in_subcommands = title == "SUBCOMMANDS"
            current = "OPTIONS" if title == "OPTIONS" else None
        elif line.startswith(".SS ") and in_subcommands:
            current = line[4:].strip().strip('"')
        if current is not None:
            out.setdefault(current, []).append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def check(binary, page):
    """What the page misses, one line each."""
    problems = []
    sections = man_sections(page)
    subs = subcommands(binary)
    if not subs:
        problems.append("storemove --help lists no subcommands")
    for option in long_options(help_text(binary)):
        if option != "--help" and not re.search(r"(?<![\w-])" + re.escape(option) + r"(?![\w-])", sections.get("OPTIONS", "")):
            problems.append(f"OPTIONS: {option} is missing")
    for sub in subs:
        if sub not in sections:
            problems.append(f"subcommand {sub}: no '.SS {sub}' under SUBCOMMANDS")
            continue
        for option in long_options(help_text(binary, sub)):
            if option == "--help":
                continue
            if not re.search(r"(?<![\w-])" + re.escape(option) + r"(?![\w-])", sections[sub]):
                problems.append(f"subcommand {sub}: option {option} is missing")
    for name in sections:
        if name != "OPTIONS" and name not in subs:
            problems.append(f".SS {name}: no such subcommand any more")
    return problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--storemove", required=True)
    parser.add_argument("--page", required=True)
    args = parser.parse_args()
    page = open(args.page, encoding="utf-8").read()

    problems = check(args.storemove, page)
    if problems:
        print(f"{args.page} is out of step with --help:", *problems, sep="\n  ")
        return 1

    # The check must see a missing subcommand and a missing option.
    restore = page.index(".SS restore\n")
    mutilated = page[:restore] + ".SS restor\n" + page[restore + len(".SS restore\n"):]
    if not any("no '.SS restore'" in p for p in check(args.storemove, mutilated)):
        print("the check did not notice a missing subcommand section")
        return 1
    mutilated = re.sub(r"\\fB\\-\\-keep\\-status\\fR", "", page)
    if "subcommand restore: option --keep-status is missing" not in check(args.storemove, mutilated):
        print("the check did not notice a missing option")
        return 1

    # groff renders it without warnings (when man is installed).
    if shutil.which("man"):
        r = subprocess.run(["man", "--warnings", "-l", args.page], capture_output=True, text=True,
                           env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
        if r.returncode != 0 or r.stderr.strip():
            print(f"man --warnings -l {args.page}: exit {r.returncode}: {r.stderr}")
            return 1
    print(f"{args.page}: {len(subcommands(args.storemove))} subcommands, every option documented")
    return 0


if __name__ == "__main__":
    sys.exit(main())

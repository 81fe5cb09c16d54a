#!/usr/bin/env python3
"""A real third party reads `storemove export --format maildir`: Dovecot serves the exported tree
over IMAP and a python imaplib client checks every folder name, UIDVALIDITY, UID, flag, internal
date and message byte against what was delivered into the store.

Usage: dovecot_test.py --storemove BIN --corpus DIR [--dovecot /usr/sbin/dovecot]
Exit status 77 (ctest SKIP_RETURN_CODE) when dovecot or the corpus is absent. DOVECOT_TEST_KEEP=1
keeps the temporary directory (store, export, configuration, log) for a look afterwards.

Dovecot runs as the current user with a throw-away configuration in a temporary directory: it
listens on 127.0.0.1 on a free port, reads the export as mail_location (Maildir++ with the
listescape plugin and '/' as separator, the conventions store/export.h writes), authenticates one
passwd-file user with a plaintext password, and logs to a file there.

Running as root: the master must start as root, but Dovecot never lets a mail process run as root
("Mail access not allowed for root", whatever first_valid_uid says). So the test hands the export
(mode 0700/0600, owned by root) to the unprivileged account `nobody` with chown -R after export
and before Dovecot starts, and sets mail_uid/mail_gid to it; login and internal processes use
Dovecot's own accounts (dovenull, dovecot) as packaged. Run as another user, every Dovecot
process simply runs as that user and nothing is chowned.

Line endings: IMAP sends messages with CRLF, and Dovecot converts the bare LFs of a maildir file
to CRLF when it serves BODY[]. So a message stored with CRLF is compared byte for byte; one with
bare LFs is compared after turning each LF that has no CR before it into CRLF, on the original
side only. Likewise IMAP literals cannot carry NUL, which Dovecot sends as 0x80: the one corpus
message with NULs is compared after that substitution. Byte-exactness of the files themselves is
checked by export_test.cc.
"""

import argparse
import base64
import csv
import grp
import hashlib
import imaplib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
USER = "alice"
PASSWORD = "export-test-secret"

# Folders of the test user: nested, an intermediate that is no folder (Archive/2023), and names
# that need Dovecot's escapes ('.', '\', leading '~') and modified UTF-7.
FOLDERS = ["INBOX", "Sent", "Projects", "Projects/2024", "Archive/2023/Q1", "a.b", "Entwürfe",
           "~tilde", "back\\slash", "日本語/台北", "INBOX/Sub"]
FLAG_NAMES = {"Seen": "\\Seen", "Flagged": "\\Flagged", "Answered": "\\Answered", "Draft": "\\Draft",
              "Deleted": "\\Deleted"}


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def read_manifests(corpus):
    entries = []
    for source in sorted(os.listdir(corpus)):
        manifest = os.path.join(corpus, source, "MANIFEST.tsv")
        if not os.path.isfile(manifest):
            continue
        with open(manifest, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                row["path"] = os.path.join(corpus, source, row["path"])
                row["flags"] = json.loads(row["flags"])
                entries.append(row)
    return entries


def pick_messages(entries):
    """A few hundred messages, deterministic, covering the awkward kinds: CRLF, mixed and missing
    line ends, bare CR, 8-bit headers and bodies, NUL, lines starting with "From "."""
    chosen, seen = [], set()

    def take(pred, limit):
        matching = [e for e in entries if pred(e["flags"]) and e["path"] not in seen and int(e["bytes"]) > 0]
        step = max(1, len(matching) // limit) if matching else 1
        for e in matching[::step][:limit]:
            seen.add(e["path"])
            chosen.append(e)

    take(lambda f: f.get("eol") == "CRLF", 60)
    take(lambda f: f.get("eol") in ("mixed", "none"), 10)
    take(lambda f: f.get("bare_cr") or f.get("nul"), 5)
    take(lambda f: f.get("8bit_hdr"), 50)
    take(lambda f: f.get("8bit_body"), 40)
    take(lambda f: f.get("mbox_from_line"), 25)
    take(lambda f: f.get("msg_rfc822") or f.get("longline"), 30)
    take(lambda f: True, 80)
    return chosen


def run(args, stdin=None):
    result = subprocess.run(args, stdin=stdin, capture_output=True)
    if result.returncode != 0:
        fail("%s: exit %d\n%s%s" % (" ".join(args), result.returncode, result.stdout.decode(errors="replace"),
                                   result.stderr.decode(errors="replace")))
    return result.stdout.decode()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def utf7_decode(name):
    """RFC 3501 modified UTF-7 -> str."""
    out, i = [], 0
    while i < len(name):
        if name[i] != "&":
            out.append(name[i])
            i += 1
            continue
        end = name.index("-", i)
        if end == i + 1:
            out.append("&")
        else:
            chunk = name[i + 1:end].replace(",", "/")
            out.append(base64.b64decode(chunk + "=" * (-len(chunk) % 4)).decode("utf-16-be"))
        i = end + 1
    return "".join(out)


def to_crlf(data):
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def as_imap_sends(original):
    """The message as an IMAP literal must carry it (see the module comment): bare LF -> CRLF,
    NUL -> 0x80 (RFC 3501 forbids NUL in literals; Dovecot substitutes 0x80). Messages with
    neither are returned unchanged, so they are compared byte for byte."""
    return to_crlf(original).replace(b"\0", b"\x80")


def account(name):
    """A system account Dovecot may switch to: only root can switch at all."""
    if os.getuid() != 0:
        return None
    try:
        return pwd.getpwnam(name).pw_name
    except KeyError:
        return None


def mail_account():
    """(uid, gid) the mail processes run as: `nobody` for root (see the module comment)."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        fail("running as root needs the unprivileged account 'nobody' for Dovecot's mail processes")
    return nobody.pw_uid, nobody.pw_gid


def chown_tree(root, uid, gid):
    os.chown(root, uid, gid)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, gid, follow_symlinks=False)


def write_config(tmp, port, maildir):
    me = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    os.makedirs(os.path.join(tmp, "run"))
    os.makedirs(os.path.join(tmp, "state"))
    os.makedirs(os.path.join(tmp, "home"))
    mail_uid, mail_gid = mail_account()
    if (mail_uid, mail_gid) != (os.getuid(), os.getgid()):
        chown_tree(maildir, mail_uid, mail_gid)
        chown_tree(os.path.join(tmp, "home"), mail_uid, mail_gid)
    # Dovecot's auth process (default_internal_user) reads the passwd file: let it pass through
    # the temporary directory without listing it.
    os.chmod(tmp, 0o711)
    with open(os.path.join(tmp, "passwd"), "w") as f:
        f.write("%s:{PLAIN}%s::::::\n" % (USER, PASSWORD))
    os.chmod(os.path.join(tmp, "passwd"), 0o644)
    config = os.path.join(tmp, "dovecot.conf")
    with open(config, "w") as f:
        f.write(f"""# throw-away configuration of dovecot_test.py
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
info_log_path = {tmp}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {account("dovecot") or me}
default_internal_group = {group if not account("dovecot") else "dovecot"}
default_login_user = {account("dovenull") or me}
# Who the mail processes run as (and who owns the export by now): see dovecot_test.py's comment.
mail_uid = {mail_uid}
mail_gid = {mail_gid}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{maildir}
mail_plugins = listescape
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp}/passwd
}}
userdb {{
  driver = static
  args = home={tmp}/home
}}
# No chroot: only root can chroot, and the test may run as another user.
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
""")
    return config


def wait_for_port(port, process, deadline_seconds=30):
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            fail("dovecot exited with %d before listening" % process.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling interval of a bounded wait, not a race fix
    fail("dovecot did not listen on port %d within %d s" % (port, deadline_seconds))


def stop_dovecot(process):
    """SIGTERM to the master, which stops its children and flushes the log; SIGKILL to the whole
    process group (its own session) if it has not finished within the deadline."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers, or the master itself after the deadline
    except ProcessLookupError:
        pass
    process.wait()


def read_log(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-4000:]
    except OSError:
        return "(no log)"


def parse_fetch(response):
    """imaplib's FETCH data -> {uid: (flags, internaldate, size, body)}."""
    messages = {}
    for item in response:
        if not isinstance(item, tuple):
            continue
        meta, body = item[0].decode(errors="replace"), item[1]
        uid = int(re.search(r"\bUID (\d+)", meta).group(1))
        flags = set(re.search(r"\bFLAGS \(([^)]*)\)", meta).group(1).split())
        internal = imaplib.Internaldate2tuple(item[0])
        size = int(re.search(r"\bRFC822\.SIZE (\d+)", meta).group(1))
        messages[uid] = (flags, time.mktime(internal), size, body)
    return messages


def folder_to_utf7(folder):
    """str -> RFC 3501 modified UTF-7 (what an IMAP client sends without UTF8=ACCEPT)."""
    out, run_ = [], []

    def flush():
        if run_:
            data = "".join(run_).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            run_.clear()

    for ch in folder:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run_.append(ch)
    flush()
    return "".join(out)


def arguments():
    """The Dovecot tests' command line (--storemove, --corpus, --dovecot), or None, after saying
    SKIP, where Dovecot or the corpus is absent."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--storemove", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--dovecot", default="/usr/sbin/dovecot")
    args = parser.parse_args()
    if not os.access(args.dovecot, os.X_OK):
        print("SKIP: %s absent (scripts/install-deps installs dovecot-imapd)" % args.dovecot)
        return None
    if not os.path.isdir(args.corpus):
        print("SKIP: corpus absent: " + args.corpus)
        return None
    return args


def scratch(prefix):
    """A temporary directory, on tmpfs where there is one."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def finish(tmp, processes, passed, log_dirs):
    """Stops the Dovecots (which flushes their logs), shows each log of a failed test, and
    removes `tmp` unless DOVECOT_TEST_KEEP is set."""
    for process in processes:
        stop_dovecot(process)
    if not passed:
        for directory in log_dirs:
            log = os.path.join(directory, "dovecot.log")
            if os.path.exists(log):  # every failure, including exceptions
                print("dovecot log %s (last lines):\n%s" % (directory, read_log(log)), file=sys.stderr)
    if os.environ.get("DOVECOT_TEST_KEEP"):
        print("kept " + tmp, file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    args = arguments()
    if args is None:
        return SKIP
    tmp = scratch("storemove-dovecot-")
    process = None
    passed = False
    try:
        store, maildir = os.path.join(tmp, "store"), os.path.join(tmp, "maildir")
        sm = args.storemove
        run([sm, "init", "--store", store])

        # Deliver through the CLI, remembering what each folder's UID holds.
        expected = {folder: {} for folder in FOLDERS}  # folder -> uid -> (path, flags, date)
        for i, entry in enumerate(pick_messages(read_manifests(args.corpus))):
            folder = FOLDERS[i % len(FOLDERS)]
            flags = [name for name, every in (("Seen", 2), ("Flagged", 3), ("Answered", 5), ("Draft", 7),
                                               ("Deleted", 11)) if i % every == 0]
            date = 1000000000 + i * 86461
            command = [sm, "deliver", "--store", store, "-u", USER, "-d", folder, "--create", "-v",
                       "--date", str(date)]
            if flags:
                command += ["--flags", ",".join(flags)]
            with open(entry["path"], "rb") as message:
                out = run(command, stdin=message)
            uid = int(re.search(r"uid (\d+)", out).group(1))
            expected[folder][uid] = (entry, {FLAG_NAMES[f] for f in flags}, date)
        uidvalidity = {row["folder"]: row["uidvalidity"]
                       for row in json.loads(run([sm, "list", "--store", store, "--json"]))}

        run([sm, "export", "--store", store, "-u", USER, "-d", maildir, "--format", "maildir"])

        port = free_port()
        config = write_config(tmp, port, maildir)
        with open(os.path.join(tmp, "dovecot.out"), "wb") as out:
            process = subprocess.Popen([args.dovecot, "-F", "-c", config], stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        wait_for_port(port, process)

        imap = imaplib.IMAP4("127.0.0.1", port)
        imap.login(USER, PASSWORD)
        status, listing = imap.list('""', "*")
        if status != "OK":
            fail("LIST: %s" % listing)
        selectable = set()
        for line in listing:
            m = re.match(rb'\(([^)]*)\) "(.)" (?:"((?:[^"\\]|\\.)*)"|(\S+))$', line)
            if not m:
                fail("unparsed LIST line %r" % line)
            attributes = m.group(1).decode().lower()
            raw = m.group(3) if m.group(3) is not None else m.group(4)
            name = utf7_decode(re.sub(rb'\\(.)', rb"\1", raw).decode("ascii"))
            if "\\noselect" not in attributes and "\\nonexistent" not in attributes:
                selectable.add(name)
        if selectable != set(FOLDERS):
            fail("LIST shows %s, expected %s" % (sorted(selectable), sorted(FOLDERS)))

        checked = 0
        for folder in FOLDERS:
            encoded = folder_to_utf7(folder)
            status, data = imap.select('"%s"' % encoded.replace("\\", "\\\\"), readonly=True)
            if status != "OK":
                fail("SELECT %s: %s" % (folder, data))
            if int(data[0]) != len(expected[folder]):
                fail("%s: %s messages, expected %d" % (folder, data[0], len(expected[folder])))
            got_validity = int(imap.response("UIDVALIDITY")[1][0])
            if got_validity != uidvalidity[folder]:
                fail("%s: UIDVALIDITY %d, store has %d" % (folder, got_validity, uidvalidity[folder]))
            if not expected[folder]:
                continue
            status, response = imap.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
            if status != "OK":
                fail("FETCH %s: %s" % (folder, response))
            got = parse_fetch(response)
            if set(got) != set(expected[folder]):
                fail("%s: UIDs %s, expected %s" % (folder, sorted(got), sorted(expected[folder])))
            for uid, (entry, flags, date) in expected[folder].items():
                got_flags, got_date, got_size, body = got[uid]
                with open(entry["path"], "rb") as f:
                    original = f.read()
                if hashlib.sha256(original).hexdigest() != entry["sha256"]:
                    fail("corpus file changed: " + entry["path"])
                # deliver leaves out a first line beginning "From ", the mbox envelope line an MTA
                # puts before a message (docs/administration.md); some corpus files were saved with one.
                envelope = re.match(rb"From [^\n]*\n", original)
                if envelope:
                    original = original[envelope.end():]
                want = as_imap_sends(original)
                if body != want:
                    fail("%s uid %d (%s): BODY[] differs (%d bytes, expected %d)" %
                         (folder, uid, entry["path"], len(body), len(want)))
                if got_size != len(to_crlf(original)):
                    fail("%s uid %d: RFC822.SIZE %d, expected %d" % (folder, uid, got_size, len(to_crlf(original))))
                if got_flags - {"\\Recent"} != flags:
                    fail("%s uid %d: FLAGS %s, expected %s" % (folder, uid, sorted(got_flags), sorted(flags)))
                if int(got_date) != date:
                    fail("%s uid %d: INTERNALDATE %d, expected %d" % (folder, uid, got_date, date))
                checked += 1
            imap.close()
        imap.logout()
        print("dovecot served all %d messages of %d folders as delivered" % (checked, len(FOLDERS)))
        passed = True
        return 0
    finally:
        finish(tmp, [process] if process is not None else [], passed, [tmp])


if __name__ == "__main__":
    sys.exit(main())

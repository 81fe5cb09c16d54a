#!/usr/bin/env python3
"""An mbox tree written by a real Dovecot goes through `storemove import --mbox-tree --utf7-names`:
Dovecot (mail_location = mbox, its default mailbox_list_utf8 = no) creates folders with non-ASCII
names, whose files it names in IMAP's modified UTF-7 ("Entw&APw-rfe"), and APPENDs corpus messages
with flags and internal dates; storemove imports the tree and the INBOX spool file into a fresh
store, exports it as a Maildir, and a second Dovecot serves that: every folder name, and in each
folder every message body, flag and internal date, must be what the first Dovecot served, and
LSUB the subscriptions Dovecot keeps in the tree's `.subscriptions`.

Usage: dovecot_mbox_import_test.py --storemove BIN --corpus DIR [--dovecot /usr/sbin/dovecot]
Exit status 77 (ctest SKIP_RETURN_CODE) when dovecot or the corpus is absent. DOVECOT_TEST_KEEP=1
keeps the temporary directory. The Dovecot set-up is dovecot_test.py's, with mbox storage.

What differs by design: an mbox import gives new UIDs (as imsimport), so messages are compared
as a multiset per folder; Dovecot keeps its own fields in the mbox file (X-UID, Status,
X-Keywords, Content-Length, ...) and hides them when it serves BODY[], while the import keeps
every byte of the file's message, so those fields are taken out of the header on the imported
side before comparing.
"""

import imaplib
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dovecot_test as dt  # noqa: E402
import dovecot_import_test as di  # noqa: E402

# No folder with both messages and sub-folders: an mbox folder is a file or a directory.
FOLDERS = ["INBOX", "Sent", "Entwürfe", "Archiv/Gelöscht", "日本語/台北", "Q&A", "a.b", "Ünïcødé ✓"]
KEYWORDS = ["$Work", "Later"]
SUBSCRIBED = ["INBOX", "Entwürfe", "Archiv/Gelöscht", "Q&A", "a.b"]
DOVECOT_FIELDS = re.compile(rb"^(x-uid|x-imapbase|x-imap|status|x-status|x-keywords|content-length):",
                            re.IGNORECASE)


def start_dovecot_mbox(dovecot, tmp, tree, spool):
    """dovecot_test.py's configuration, with the mbox tree as mail_location and INBOX in `spool`."""
    os.makedirs(tmp)
    port = dt.free_port()
    config = dt.write_config(tmp, port, tree)
    uid, gid = dt.mail_account()
    dt.chown_tree(os.path.dirname(spool), uid, gid)
    with open(config) as f:
        text = f.read()
    maildir_line = "mail_location = maildir:%s\n" % tree
    if maildir_line not in text or "mail_plugins = listescape\n" not in text:
        dt.fail("dovecot_test.py's configuration changed: no '%s'" % maildir_line.strip())
    text = text.replace(maildir_line, "mail_location = mbox:%s:INBOX=%s\n" % (tree, spool))
    text = text.replace("mail_plugins = listescape\n", "")
    with open(config, "w") as f:
        f.write(text)
    with open(os.path.join(tmp, "dovecot.out"), "wb") as out:
        process = subprocess.Popen([dovecot, "-F", "-c", config], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    dt.wait_for_port(port, process)
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login(dt.USER, dt.PASSWORD)
    return process, imap


def without_dovecot_fields(body):
    """The message with Dovecot's mbox fields taken out of its header (see the module's docstring)."""
    end = re.search(rb"\r?\n(\r?\n)", body)  # the header, its last line end included; the empty line
    head, rest = (body[:end.start(1)], body[end.start(1):]) if end else (body, b"")
    lines = re.split(rb"(?<=\n)", head)
    kept, skipping = [], False
    for line in lines:
        if line[:1] in (b" ", b"\t") and skipping:
            continue  # a continuation of a field taken out
        skipping = bool(DOVECOT_FIELDS.match(line))
        if not skipping:
            kept.append(line)
    return b"".join(kept) + rest


def first_difference(got, want):
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return ", from byte %d: %r / %r" % (at, got[max(0, at - 40):at + 40], want[max(0, at - 40):at + 40])


def by_folder(snapshot, strip):
    out = {}
    for folder, (_validity, _next, messages) in snapshot.items():
        out[folder] = sorted((sorted(flags), date, without_dovecot_fields(body) if strip else body)
                             for flags, date, body in messages.values())
    return out


def main():
    args = dt.arguments()
    if args is None:
        return dt.SKIP
    tmp = dt.scratch("storemove-dovecot-mbox-")
    os.chmod(tmp, 0o711)  # Dovecot's own accounts pass through to their configuration
    processes = []
    passed = False
    try:
        sm = args.storemove
        tree = os.path.join(tmp, "mail")
        spool = os.path.join(tmp, "spool", dt.USER)
        os.makedirs(tree)
        os.makedirs(os.path.dirname(spool))
        process, imap = start_dovecot_mbox(args.dovecot, os.path.join(tmp, "first"), tree, spool)
        processes.append(process)
        for folder in FOLDERS:
            if folder != "INBOX":
                status, data = imap.create(di.quoted(folder))
                if status != "OK":
                    dt.fail("CREATE %s: %s" % (folder, data))
        for folder in SUBSCRIBED:
            status, data = imap.subscribe(di.quoted(folder))
            if status != "OK":
                dt.fail("SUBSCRIBE %s: %s" % (folder, data))
        # Messages with NUL cannot go through an APPEND literal; ones beginning with "From " lines
        # Dovecot keeps exactly (its Content-Length), which is what the import must honour.
        entries = [e for e in dt.pick_messages(dt.read_manifests(args.corpus)) if not e["flags"].get("nul")]
        for i, entry in enumerate(entries):
            folder = FOLDERS[i % len(FOLDERS)]
            flags = [name for name, every in (("\\Seen", 2), ("\\Flagged", 3), ("\\Answered", 5), ("\\Draft", 7),
                                               ("\\Deleted", 11)) if i % every == 0]
            flags += [k for j, k in enumerate(KEYWORDS) if i % (j + 2) == 1]
            with open(entry["path"], "rb") as f:
                message = f.read()
            date = imaplib.Time2Internaldate(1000000000 + i * 86461)
            status, data = imap.append(di.quoted(folder), "(%s)" % " ".join(flags) if flags else None, date, message)
            if status != "OK":
                dt.fail("APPEND %s (%s): %s" % (folder, entry["path"], data))
        before = di.snapshot(imap)
        subscribed_before = di.subscribed(imap)
        if subscribed_before != set(SUBSCRIBED):
            dt.fail("Dovecot's LSUB lists %s, expected %s" % (sorted(subscribed_before), sorted(SUBSCRIBED)))
        imap.logout()
        dt.stop_dovecot(process)
        if set(before) != set(FOLDERS):
            dt.fail("Dovecot lists %s, expected %s" % (sorted(before), sorted(FOLDERS)))
        utf7_files = [name for name in os.listdir(tree) if "&" in name]
        if "Entw&APw-rfe" not in utf7_files:
            dt.fail("Dovecot's tree has no file Entw&APw-rfe (mUTF-7 names): %s" % sorted(os.listdir(tree)))

        store = os.path.join(tmp, "store")
        dt.run([sm, "init", "--store", store])
        out = dt.run([sm, "import", "--store", store, "-u", dt.USER, "--mbox-tree", tree, "--utf7-names"])
        print(out.strip().splitlines()[-1])
        out = dt.run([sm, "import", "--store", store, "-u", dt.USER, "-s", spool])
        print(out.strip().splitlines()[-1])
        again = os.path.join(tmp, "again")
        dt.run([sm, "export", "--store", store, "-u", dt.USER, "-d", again, "--format", "maildir"])

        process, imap = di.start_dovecot(args.dovecot, os.path.join(tmp, "second"), again)
        processes.append(process)
        after = di.snapshot(imap)
        subscribed_after = di.subscribed(imap)
        imap.logout()
        if subscribed_after != subscribed_before:
            dt.fail("after the import LSUB lists %s, before %s (Dovecot's .subscriptions)" %
                    (sorted(subscribed_after), sorted(subscribed_before)))

        want, got = by_folder(before, False), by_folder(after, True)
        if set(got) != set(want):
            dt.fail("after the import Dovecot lists %s, before %s" % (sorted(got), sorted(want)))
        checked = 0
        for folder in sorted(want):
            if len(got[folder]) != len(want[folder]):
                dt.fail("%s: %d messages, Dovecot served %d" % (folder, len(got[folder]), len(want[folder])))
            for w, g in zip(want[folder], got[folder]):
                if g != w:
                    dt.fail("%s: a message differs: flags %s / %s, date %d / %d, body %d / %d bytes%s" %
                            (folder, g[0], w[0], g[1], w[1], len(g[2]), len(w[2]),
                             "" if g[2] == w[2] else first_difference(g[2], w[2])))
                checked += 1
        if checked < 200:
            dt.fail("only %d messages compared" % checked)
        print("Dovecot's mbox tree imported: all %d messages of %d folders (%d named in modified UTF-7) kept "
              "their folder, flags, keywords, date and body; %d subscriptions kept" %
              (checked, len(want), len(utf7_files), len(subscribed_after)))
        passed = True
        return 0
    finally:
        dt.finish(tmp, processes, passed, [os.path.join(tmp, name) for name in ("first", "second")])


if __name__ == "__main__":
    sys.exit(main())

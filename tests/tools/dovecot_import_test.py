#!/usr/bin/env python3
"""A Maildir written by a real Dovecot goes through `storemove import --maildir` unchanged: Dovecot
builds the tree (IMAP CREATE, APPEND with flags, keywords and internal dates, deliveries by
dovecot-lda into new/, STORE, EXPUNGE),
storemove imports it into a fresh store, exports that again as a Maildir, and a second Dovecot
serves the result: every folder, UIDVALIDITY, UID, flag, keyword, internal date and message body
must be what the first Dovecot served, and LSUB the same subscriptions.

Usage: dovecot_import_test.py --storemove BIN --corpus DIR [--dovecot /usr/sbin/dovecot]
Exit status 77 (ctest SKIP_RETURN_CODE) when dovecot or the corpus is absent. DOVECOT_TEST_KEEP=1
keeps the temporary directory. The Dovecot set-up (configuration, running as root with mail
processes as `nobody`, listescape, '/' separator) is dovecot_test.py's, imported from it.

Both sides are read through Dovecot, so its own conversions (bare LF -> CRLF in BODY[]) apply
alike and bodies are compared byte for byte. Messages with NUL are not used: an IMAP APPEND
literal cannot carry them.
"""

import imaplib
import json
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dovecot_test as dt  # noqa: E402

KEYWORDS = ["$Work", "Later", "$Label1"]
LDA_MESSAGES = 6


def quoted(folder):
    return '"%s"' % dt.folder_to_utf7(folder).replace("\\", "\\\\")


def start_dovecot(dovecot, tmp, maildir):
    os.makedirs(tmp)
    port = dt.free_port()
    config = dt.write_config(tmp, port, maildir)
    with open(os.path.join(tmp, "dovecot.out"), "wb") as out:
        process = subprocess.Popen([dovecot, "-F", "-c", config], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    dt.wait_for_port(port, process)
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login(dt.USER, dt.PASSWORD)
    return process, imap


def listed(imap, command):
    """(decoded name, lowercased attributes) of each line that LIST or LSUB "" "*" answers."""
    status, listing = getattr(imap, command)('""', "*")
    if status != "OK":
        dt.fail("%s: %s" % (command.upper(), listing))
    out = []
    for line in listing:
        if line is None:  # an empty answer
            continue
        m = re.match(rb'\(([^)]*)\) "(.)" (?:"((?:[^"\\]|\\.)*)"|(\S+))$', line)
        if not m:
            dt.fail("unparsed %s line %r" % (command.upper(), line))
        raw = m.group(3) if m.group(3) is not None else m.group(4)
        out.append((dt.utf7_decode(re.sub(rb'\\(.)', rb"\1", raw).decode("ascii")), m.group(1).decode().lower()))
    return out


def selectable_folders(imap):
    return {name for name, attributes in listed(imap, "list")
            if "\\noselect" not in attributes and "\\nonexistent" not in attributes}


def snapshot(imap):
    """folder -> (UIDVALIDITY, UIDNEXT, {uid: (flags without \\Recent, internal date, body)})."""
    out = {}
    for folder in sorted(selectable_folders(imap)):
        status, data = imap.status(quoted(folder), "(UIDNEXT)")
        if status != "OK":
            dt.fail("STATUS %s: %s" % (folder, data))
        uidnext = int(re.search(rb"UIDNEXT (\d+)", data[0]).group(1))
        status, data = imap.select(quoted(folder), readonly=True)
        if status != "OK":
            dt.fail("SELECT %s: %s" % (folder, data))
        validity = int(imap.response("UIDVALIDITY")[1][0])
        messages = {}
        if int(data[0]) > 0:
            status, response = imap.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
            if status != "OK":
                dt.fail("FETCH %s: %s" % (folder, response))
            for uid, (flags, date, _size, body) in dt.parse_fetch(response).items():
                messages[uid] = (frozenset(flags - {"\\Recent"}), int(date), body)
        imap.close()
        out[folder] = (validity, uidnext, messages)
    return out


SUBSCRIBED = ["INBOX", "Projects/2024", "a.b", "Entwürfe", "back\\slash", "日本語/台北", "INBOX/Sub"]


def subscribed(imap):
    return {name for name, _ in listed(imap, "lsub")}


def main():
    args = dt.arguments()
    if args is None:
        return dt.SKIP
    tmp = dt.scratch("storemove-dovecot-import-")
    os.chmod(tmp, 0o711)  # Dovecot's own accounts pass through to their configuration
    processes = []
    passed = False
    try:
        sm = args.storemove
        written = os.path.join(tmp, "written")  # the tree Dovecot writes
        os.makedirs(written)
        process, imap = start_dovecot(args.dovecot, os.path.join(tmp, "first"), written)
        processes.append(process)
        for folder in dt.FOLDERS:
            if folder != "INBOX":
                status, data = imap.create(quoted(folder))
                if status != "OK":
                    dt.fail("CREATE %s: %s" % (folder, data))
        for folder in SUBSCRIBED:
            status, data = imap.subscribe(quoted(folder))
            if status != "OK":
                dt.fail("SUBSCRIBE %s: %s" % (folder, data))
        entries = [e for e in dt.pick_messages(dt.read_manifests(args.corpus)) if not e["flags"].get("nul")]
        for i, entry in enumerate(entries):
            folder = dt.FOLDERS[i % len(dt.FOLDERS)]
            flags = [name for name, every in (("\\Seen", 2), ("\\Flagged", 3), ("\\Answered", 5), ("\\Draft", 7),
                                               ("\\Deleted", 11)) if i % every == 0]
            flags += [k for j, k in enumerate(KEYWORDS) if i % (j + 2) == 1]
            with open(entry["path"], "rb") as f:
                message = f.read()
            date = imaplib.Time2Internaldate(1000000000 + i * 86461)
            # No flags: Dovecot saves into new/; with flags into cur/.
            status, data = imap.append(quoted(folder), "(%s)" % " ".join(flags) if flags else None, date, message)
            if status != "OK":
                dt.fail("APPEND %s (%s): %s" % (folder, entry["path"], data))
        # Final delivery by dovecot-lda, as from an MTA: files in new/, no flags, \Recent.
        lda = os.path.join(os.path.dirname(os.path.realpath(args.dovecot)), "..", "lib", "dovecot", "dovecot-lda")
        if not os.access(lda, os.X_OK):
            dt.fail("dovecot-lda absent beside %s" % args.dovecot)
        for i, entry in enumerate(entries[:LDA_MESSAGES]):
            folder = "INBOX" if i % 2 == 0 else "Projects"
            with open(entry["path"], "rb") as message:
                dt.run([lda, "-c", os.path.join(tmp, "first", "dovecot.conf"), "-d", dt.USER, "-f",
                        "sender@example.net", "-m", dt.folder_to_utf7(folder)], stdin=message)
        # Later changes, as a mail client makes them: flags and keywords set on existing messages
        # (Dovecot renames files into cur/), one message expunged (a gap in the UIDs).
        imap.select(quoted("Sent"))
        imap.uid("STORE", "1:*", "+FLAGS", "(\\Seen Later)")
        imap.uid("STORE", "2", "+FLAGS", "(\\Deleted)")
        imap.expunge()
        imap.close()
        before = snapshot(imap)
        subscribed_before = subscribed(imap)
        if subscribed_before != set(SUBSCRIBED):
            dt.fail("Dovecot's LSUB lists %s, expected %s" % (sorted(subscribed_before), sorted(SUBSCRIBED)))
        imap.logout()
        dt.stop_dovecot(process)
        if set(before) != set(dt.FOLDERS):
            dt.fail("Dovecot lists %s, expected %s" % (sorted(before), sorted(dt.FOLDERS)))

        store = os.path.join(tmp, "store")
        dt.run([sm, "init", "--store", store])
        out = dt.run([sm, "import", "--store", store, "-u", dt.USER, "--maildir", written])
        print(out.strip().splitlines()[-1])
        if "messages got new UIDs" in out or "lost a flag" in out:
            dt.fail("import of Dovecot's tree lost UIDs or flags:\n" + out)
        validity = {row["folder"]: row["uidvalidity"]
                    for row in json.loads(dt.run([sm, "list", "--store", store, "--json"]))}
        again = os.path.join(tmp, "again")
        dt.run([sm, "export", "--store", store, "-u", dt.USER, "-d", again, "--format", "maildir"])

        process, imap = start_dovecot(args.dovecot, os.path.join(tmp, "second"), again)
        processes.append(process)
        after = snapshot(imap)
        subscribed_after = subscribed(imap)
        imap.logout()
        if subscribed_after != subscribed_before:
            dt.fail("after the round trip LSUB lists %s, before %s" % (sorted(subscribed_after),
                                                                       sorted(subscribed_before)))

        if set(after) != set(before):
            dt.fail("after the round trip Dovecot lists %s, before %s" % (sorted(after), sorted(before)))
        checked = 0
        for folder, (want_validity, want_next, want) in before.items():
            got_validity, got_next, got = after[folder]
            if validity[folder] != want_validity or got_validity != want_validity:
                dt.fail("%s: UIDVALIDITY %d in the store, %d served, Dovecot's was %d" %
                        (folder, validity[folder], got_validity, want_validity))
            if got_next != want_next:
                dt.fail("%s: UIDNEXT %d, Dovecot's was %d" % (folder, got_next, want_next))
            if set(got) != set(want):
                dt.fail("%s: UIDs %s, Dovecot's were %s" % (folder, sorted(got), sorted(want)))
            for uid, (flags, date, body) in want.items():
                if got[uid][0] != flags:
                    dt.fail("%s uid %d: FLAGS %s, Dovecot's were %s" % (folder, uid, sorted(got[uid][0]), sorted(flags)))
                if got[uid][1] != date:
                    dt.fail("%s uid %d: INTERNALDATE %d, Dovecot's was %d" % (folder, uid, got[uid][1], date))
                if got[uid][2] != body:
                    dt.fail("%s uid %d: BODY[] differs (%d bytes, Dovecot's %d)" % (folder, uid, len(got[uid][2]),
                                                                                   len(body)))
                checked += 1
        if checked < 200:
            dt.fail("only %d messages compared" % checked)
        print("Dovecot's maildir imported: all %d messages of %d folders kept UID, flags, keywords, date and body;"
              " %d subscriptions kept" % (checked, len(before), len(subscribed_before)))
        passed = True
        return 0
    finally:
        dt.finish(tmp, processes, passed, [os.path.join(tmp, name) for name in ("first", "second")])


if __name__ == "__main__":
    sys.exit(main())

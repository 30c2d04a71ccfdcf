"""The library after a scan: what is known of one file (`show`), the user's own labels (`label`),
forgetting files (`forget`, `prune`) and files of the same content (`dupes`).

Every function takes the database's path, and raises LibraryError, whose message is one line for
the user, for a file, label or database it cannot use. Links move and go only through
sorter/links.py, so only entries stickersort made and that are still what it made are touched.
"""
import json
import os
import sqlite3
import stat
from contextlib import contextmanager
from pathlib import Path

from ..model.labels import EMOTIONS, NOFACE
from .links import MODES, LinkError, Linker, as_recorded, is_ours
from .paths import OWNER_FILE, PathError, bare as is_bare, is_out, key_path, names_db, out_owner, path_key, scanned_as
from .store import LOCK_WAIT_S, Store, StoreError, dry_run_copy

# What a user may file a sticker under: an expression, or "there is no face here".
USER_LABELS = (*EMOTIONS, NOFACE)


class LibraryError(Exception):
    """A file, label or database a library command cannot use; one line for the user."""


class NoLibrary(LibraryError):
    """The database itself cannot be used: gone, damaged, locked, of another program."""


def open_store(db_path, readonly=False, upgrade=True, wait=LOCK_WAIT_S):
    try:
        return Store(db_path, create=False, readonly=readonly, upgrade=upgrade, wait=wait)
    except StoreError as e:
        raise NoLibrary(str(e)) from None


def find(store, file_path):
    """The record of file_path: a scanned file, or a link stickersort made to one in OUT."""
    if not str(file_path).strip():
        raise LibraryError("an empty FILE names no file")
    for key in _keys(file_path):
        row = store.get(key) or _linked(store, key)
        if row:
            return row
    raise LibraryError(f"no record of {file_path} in {store.path} (scan it first, or pass its --db)")


def _keys(file_path):
    """The keys file_path may be recorded under: as given (a file in a linked folder that a scan
    with --follow-links walked into), with its folder resolved (how a scan names what it finds
    under DIR), fully resolved."""
    return dict.fromkeys(path_key(p) for p in (_as_given(file_path), scanned_as(file_path), os.path.realpath(file_path)))


def _as_given(file_path):
    """file_path made absolute, its links kept after its last `..`: abspath would drop `link/..`
    as text, where the file system goes where the link leads, then up."""
    parts = Path(file_path).parts
    if ".." not in parts:
        return os.path.abspath(file_path)
    up = len(parts) - parts[::-1].index("..")
    return os.path.join(os.path.realpath(os.path.join(*parts[:up])), *parts[up:])


@contextmanager
def _read(store):
    """A damaged page met while reading: the library unusable, in one line."""
    try:
        yield
    except StoreError as e:
        raise NoLibrary(str(e)) from None


def _linked(store, key):
    """The record whose link in OUT key is, while the entry is still what stickersort made (one the
    user changed, a link led elsewhere, is theirs, and names what it leads to)."""
    link = store.link_at(key)
    return store.get(link["file"]) if link and is_ours(link, store.path) is not False else None


# ---- label --------------------------------------------------------------------------------

def label_file(db_path, file_path, emotion, wait=LOCK_WAIT_S):
    """Files file_path under emotion for good: the record keeps it as the user's label (no scan,
    --rescan or new model overrides it) and its link moves to OUT/<emotion>/. Returns the updated
    record, with `link`: where its link is now (None when it has none; the next scan makes it),
    and `changed`: False when it was the user's label already, its link in place. wait: seconds
    for another process's write lock (the browse page answers sooner)."""
    if emotion not in USER_LABELS:
        raise LibraryError(f"unknown label {emotion!r}; choose from {', '.join(USER_LABELS)}")
    store = open_store(db_path, wait=wait)
    try:  # closed, since a server labels many times
        return _label(store, file_path, emotion)
    except StoreError as e:  # a write that waited out the lock, say
        raise NoLibrary(str(e)) from None
    except sqlite3.OperationalError as e:  # a link's record, locked out the same way
        raise NoLibrary(f"database {store.path}: {e}") from None
    finally:
        store.close()


def _label(store, file_path, emotion):
    row = find(store, file_path)
    if row["error"]:
        raise LibraryError(f"{row['path']} could not be read ({row['error']}): nothing to label")
    source = key_path(row["path"])
    _still_a_sticker(store, row, source)
    store.set_label(row["path"], emotion, emotion)  # the record first, then the link, as a scan does
    try:
        link, kept = _relink(store, row, source, emotion)
    except (LinkError, FileNotFoundError) as e:  # the link cannot move: the label is not half given
        store.set_label(row["path"], row["label"], row["user_label"])
        raise LibraryError(str(e) if isinstance(e, LinkError) else f"{row['path']} is gone") from None
    return {**store.get(row["path"]), "link": link, "changed": not (row["user_label"] == emotion and kept)}


def _still_a_sticker(store, row, source):
    """Refuses a file that is no longer the one its scan read: gone; a link put in its place or in
    a folder's (where the scan did not follow links) or a FIFO, through which its entry in OUT
    would be made, a hard link or copy of whatever it leads to; or changed since (its size and
    mtime, as a scan tells it)."""
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise LibraryError(f"{row['path']} no longer exists (`stickersort prune` forgets it)") from None
    except OSError as e:
        raise LibraryError(f"cannot read {row['path']}: {e.strerror}") from None
    through_a_link = not store.follows_links(os.path.dirname(row["path"])) and os.path.realpath(source) != source
    if not stat.S_ISREG(st.st_mode) or through_a_link:
        raise LibraryError(f"{row['path']} is no longer the file that was scanned (a link or other "
                           f"thing in its place): scan its folder again")
    if not as_recorded(st, row):
        raise LibraryError(f"{row['path']} changed since its scan: scan its folder again, then label it")


def _relink(store, row, source, label):
    """Moves the file's link to <its OUT>/<label>/, in the link's mode: where it is now (None when
    it has none), and whether it was there already."""
    links = [r for r in store.links_of(row["path"]) if r["mode"] in MODES]  # not a copy in flight
    if not links:
        return None, True
    last = links[-1]
    out = Path(key_path(last["link"])).parent.parent
    _check_own_out(out, store)
    linker = Linker(out, store, last["mode"], wait=store.wait)
    link = linker.place(source, row["path"], label, row["hash"])
    return link, linker.counts["kept"] == 1


def _check_own_out(out, store):
    """OUT as the scan left it: a folder (or a link to one: OUT moved and linked back) marked as
    this database's. Never made or marked again here: on a drive not mounted it would land on the
    disk beneath, and a folder put in its place, or a link to one, is the user's."""
    again = "nothing changed; scan the file's folder with --out naming where OUT is now, then label it"
    if not os.path.isdir(out):
        raise LinkError(f"{out}, where its link was, is gone (moved, or on a drive not mounted?): {again}")
    try:
        owner = out_owner(out)
    except PathError as e:
        raise LinkError(str(e)) from None
    if owner is None:
        raise LinkError(f"{out}, where its link was, is no longer marked as this database's OUT ({OWNER_FILE} "
                        f"is gone: a folder put in its place?): {again}")
    if not names_db(owner, store.path):
        raise LinkError(f"{out} belongs to the database {owner}: use --db {owner}")


# ---- show ---------------------------------------------------------------------------------

def show_file(db_path, file_path):
    """Everything recorded of one file, as plain data: its label and whose it is, the vote with
    its runner-up, every sampled frame's faces, and its links."""
    store = open_store(db_path, readonly=True)
    with _read(store):
        row = find(store, file_path)
        faces, links = store.faces_of(row["path"]), store.links_of(row["path"])
    scores = json.loads(row["scores"] or "{}")
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    # The vote's winner: `guess` since schema 2; an older record's is its scores' top.
    guess = row["guess"] or (ranked[0][0] if ranked and not row["error"] else None)
    scored = bool(scores) and not row["error"]  # no face, no score: null, as `query` gives it
    return {
        "path": row["path"], "exists": not _gone(row["path"], store.follows_links(os.path.dirname(row["path"]))),
        "label": row["label"],
        "user_label": row["user_label"], "guess": guess,
        "confidence": row["confidence"] if scored else None, "margin": row["margin"] if scored else None,
        "runner_up": dict([ranked[1]]) if len(ranked) > 1 else None, "scores": scores,
        "kind": row["kind"], "width": row["width"], "height": row["height"],
        "frames_total": row["frames_total"], "frames_sampled": row["frames_sampled"],
        "faces": [_face(f) for f in faces],
        # A symlink whose file is gone is no entry to open; one the user led elsewhere is not the file's.
        "links": [{"link": r["link"], "label": r["label"], "mode": r["mode"],
                   "exists": os.path.exists(key_path(r["link"])) and is_ours(r, store.path) is not False} for r in links],
        "hash": row["hash"], "model_id": row["model_id"], "scanned_at": row["scanned_at"], "error": row["error"],
        "note": row["note"]}


def scanned_folder(db_path, path):
    """The scanned folder that path lies in, if any: its next scan would file what is put there."""
    store = open_store(db_path, readonly=True)
    with _read(store):
        settings = store.settings_for(path_key(os.path.realpath(path)))
    return settings and settings["path"]


def _face(row):
    return {"frame": row["frame"], "time": row["time"], "box": [row["x"], row["y"], row["w"], row["h"]],
            "detector_score": row["detector_score"], "label": row["label"],
            "probs": dict(zip(EMOTIONS, json.loads(row["probs"])))}


def describe(info):
    """show's text: a few lines a person reads top to bottom."""
    lines = [info["path"] + ("" if info["exists"] else "  (gone: `stickersort prune` forgets it)")]
    if info["error"]:
        return lines + [f"  unreadable: {info['error']}"]
    whose = " (yours)" if info["user_label"] else ""
    lines.append(f"  label      {info['label']}{whose}")
    if info["guess"]:
        (second, p2), = info["runner_up"].items()
        lines.append(f"  vote       {info['guess']} {info['confidence']:.2f}, runner-up {second} {p2:.2f} "
                     f"(margin {info['margin']:.4f})")
    else:
        lines.append("  vote       no face found")
    n = len(info["faces"])
    lines.append(f"  file       {info['kind']} {info['width']}x{info['height']}, {info['frames_sampled']} of "
                 f"{info['frames_total']} frames sampled, {n} face{'' if n == 1 else 's'}")
    if info["note"]:
        lines.append(f"  note       {info['note']}")
    for f in info["faces"]:
        x, y, w, h = f["box"]
        top = ", ".join(f"{e} {p:.2f}" for e, p in sorted(f["probs"].items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"  frame {f['frame']:<4} {f['time']:6.2f} s  box {x},{y} {w}x{h}  score "
                     f"{f['detector_score']:.2f}  {f['label']:<8} ({top})")
    for link in info["links"]:
        lines.append(f"  link       {link['link']}{'' if link['exists'] else '  (missing)'}")
    lines.append(f"  model      {info['model_id']}, scanned {info['scanned_at']}")
    return lines


# ---- forget, prune ------------------------------------------------------------------------

def forget(db_path, path, dry_run=False, report=None):
    """Drops the records of the files at or under path and removes the links stickersort made for
    them; the files themselves are never touched. report(action, path) hears each step."""
    if not str(path).strip():
        raise LibraryError("an empty PATH would mean the current folder; name it (`.`) if that is meant")
    with _forgetting_store(db_path, dry_run) as store:
        named, keys = _named(store, path)
        if not keys:  # an entry in OUT, as show and label take it (in every link mode)
            keys = {row["path"] for key in named if (row := _linked(store, key))}
        done = _forget(store, sorted(keys), dry_run, report)
        if not dry_run:
            for key in named:
                store.forget_folders(key)  # what its scans were told, too
        return done


def _named(store, path):
    """The keys PATH names for forget, and the records at or under them. A link is itself, not
    what it leads to: the records of a file it leads to, or of a folder scanned without following
    links, are not under PATH. Only a link to a folder that lies outside every scanned folder
    stands for its target, as a scan of it did (`scan LINK` scans the folder it leads to). An
    entry in an OUT stands for a sticker, as show and label take it."""
    records = lambda keys: {k for key in keys for k in store.paths_within(key)}
    bare = str(path).rstrip(os.sep) or str(path)
    if os.path.islink(bare) and not is_out(os.path.dirname(os.path.dirname(_as_given(bare)))):
        head, name = os.path.split(_as_given(bare))
        own = list(dict.fromkeys(path_key(p) for p in (_as_given(bare), os.path.join(os.path.realpath(head), name))))
        scanned = store.settings_for(path_key(os.path.realpath(head))) is not None  # the link is an item there
        if (keys := records(own)) or scanned or not os.path.isdir(bare):
            return own, keys
    named = _keys(path)
    return named, records(named)


def prune(db_path, dry_run=False, report=None):
    """forget() for every recorded file that no longer exists (a deleted folder's, say). A file
    whose folder cannot be looked into is not taken for gone, nor one whose scanned folder is gone
    or empty whole, as a drive that is not mounted leaves it: those are left alone, counted by
    folder in `away`, for `forget` to drop once they are gone for good."""
    with _forgetting_store(db_path, dry_run) as store:
        gone, away, bare, followed = [], {}, {}, {}
        for row in store.paths_and_roots():
            root = row["root"]
            if root not in followed:
                followed[root] = store.follows_links(root)
            if not _gone(row["path"], followed[root]):
                continue
            if root not in bare:
                bare[root] = is_bare(key_path(root))
            if bare[root]:
                away[root] = away.get(root, 0) + 1
            else:
                gone.append(row["path"])
        return _forget(store, gone, dry_run, report) | {"away": away}


@contextmanager
def _forgetting_store(db_path, dry_run):
    """The database to forget from. A dry run's is a snapshot of its own, as a scan's dry run
    is: a writing open would upgrade an older schema and mark the file, and a dry run writes nothing."""
    if not dry_run:
        yield open_store(db_path)
        return
    open_store(db_path, readonly=True, upgrade=False).close()  # its one-line refusals, before any copy
    try:
        scratch, copy = dry_run_copy(db_path)
    except StoreError as e:
        raise LibraryError(str(e)) from None
    with scratch:
        store = open_store(copy)
        try:
            yield store
        finally:
            store.close()


def _gone(key, followed):
    """Whether a recorded file is gone, as its folder's next scan would find it: a link in its
    place is no sticker to a scan that does not follow links (one that does keeps even a link to
    nothing, as an error record)."""
    try:
        return stat.S_ISLNK(os.lstat(key_path(key)).st_mode) and not followed
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False  # a folder it cannot look into (permission denied): not known to be gone


def _forget(store, keys, dry_run, report):
    """Links go through Linker.unlink_all, which keeps a hard link or copy that has become the last
    copy of a file (its original gone): such an entry is reported, counted in `kept`, and stays."""
    report = report or (lambda action, path: None)
    linker = Linker(Path(os.sep), store, dry_run=dry_run,  # unlink_all works from the records, not OUT
                    report=lambda action, link, source: report(action, link))
    for done, key in enumerate(keys):
        try:
            linker.unlink_all(key)
        except LinkError as e:  # the lock file, before the first; a link that cannot go, its file kept
            before = f"; the {done} file{'s' if done > 1 else ''} before it forgotten" if done and not dry_run else ""
            raise LibraryError(f"{e}{before}") from None
        report("forget", key)
        if not dry_run:
            store.forget(key)
    return {"files": keys, "links_removed": linker.counts["removed"], "kept": linker.counts["last_copies"],
            "dry_run": dry_run}


# ---- dupes --------------------------------------------------------------------------------

def dupes(db_path):
    """Groups of recorded files with the same content, the biggest waste first."""
    store = open_store(db_path, readonly=True)
    groups = {}
    with _read(store):
        rows = store.same_content()
    for row in rows:
        held = _holding(row)  # a deleted or changed copy is no copy (prune and scan see to those)
        if held:
            groups.setdefault(row["hash"], []).append((row, held))
    found = []
    for digest, held in groups.items():
        files, first_name = [], {}
        for row, inode in held:  # a hard link (or a followed link) is another name of one file
            first = first_name.setdefault(inode, row["path"])
            files.append({"path": row["path"], "label": row["label"],
                          "same_file_as": first if first != row["path"] else None})
        if len(first_name) > 1:
            found.append({"hash": digest, "size": held[0][0]["size"], "copies": len(first_name), "files": files})
    return sorted(found, key=lambda g: (-g["size"] * (g["copies"] - 1), g["files"][0]["path"]))


def _holding(row):
    """The file (device, inode) at a record's path while it still holds the recorded content (its
    recorded size and mtime, as a scan tells it unchanged); else None."""
    try:
        st = os.stat(key_path(row["path"]))
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if as_recorded(st, row) else None

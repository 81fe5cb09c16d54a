// Temporary files a killed writer left behind (docs/store-format.md §6.1, "Leftovers").
//
// Appends write `tmp.<pid>.<token>` in the folder directory and rename it into place; relink
// links a message under such a name before exchanging it; index rewrites and repository
// replacements use `<name>.tmp.<token>`. A kill -9 between the two steps leaves the temporary
// name: never visible as a message, but it holds disk space, and when it is a hard link it keeps
// a repository entry's link count up, so `relink -d` can never purge that entry. The relink pass
// removes those whose writer is certainly gone.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>

namespace storemove::store {

// How old (by ctime: link(2) and rename(2) set it, whatever the file's data time) a temporary
// must be before it counts as stale. An append holds its file for seconds; an hour leaves room
// for a stopped writer, and a writer whose process still runs is never judged stale.
inline constexpr std::chrono::seconds kStaleTemporaryAge{3600};

// Whether the directory entry `name` (with `st`, from lstat) is a temporary of ours that no
// writer will finish: a regular file named `tmp.<pid>.<token>` whose process is not running (in
// this process's pid namespace, and, where the token gives its start, `s<ticks>.`, not another
// given that pid since; for a token naming another namespace, `n<inode>.`: no process of that
// namespace is left that started before the writer), or `<name>.tmp.<token>`, either one last
// changed at least `min_age` before `now`. Kept whenever /proc cannot tell.
bool IsStaleTemporary(std::string_view name, const struct stat& st, std::time_t now, std::chrono::seconds min_age);

// Removes the stale temporaries directly in the directory `dirfd` (`shown` names it in errors);
// returns how many it removed. One already gone is not an error.
uint64_t RemoveStaleTemporaries(int dirfd, const std::string& shown, std::chrono::seconds min_age);

// A new temporary name for this process: `tmp.<pid>.n<ns>.s<start>.<random>`, where <ns> is the
// inode of its pid namespace (/proc/self/ns/pid) and <start> when it started, in clock ticks since
// boot (/proc/self/stat; left out in a time namespace that shifts the boot clock), or
// `tmp.<pid>.<random>` when /proc cannot be read. The namespace says in which namespace <pid> can
// be asked about: a container's writer sharing the store has pids the host does not know
// (helper-128: a delivery on the host removed the staged files of a live import in a container).
// The start tells the writer from a later process given its pid, or from a later namespace given
// its namespace's number, by a clock no step of the wall clock moves (helper-134).
std::string NewTemporaryName();

// Removes, directly in `dirfd`, the temporaries of writers in this process's pid namespace whose
// process is not running, whatever their age: the writer that would have renamed them is gone.
// Others (another namespace's, or names without one) are left to relink's age rule. Best effort,
// for writers about to commit to the folder: garbage that cannot be removed never fails a
// delivery. Returns how many it removed.
uint64_t RemoveTemporariesOfGoneWriters(int dirfd);

}  // namespace storemove::store

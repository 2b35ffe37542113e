//! [`RepoWalk`]: the order and pruning of a paged repository listing, shared
//! by the backends that store repositories as a tree of directories (or key
//! prefixes) named by the name's `/`-separated components.
//!
//! Repository names sort bytewise, which is not the order of a depth-first
//! walk: `a-b` and `a.c` sort between `a` and `a/x` (`-` and `.` are below
//! `/`). The walk therefore keeps the directories still to visit in a
//! min-heap by name: a directory's own name is the smallest name in its
//! subtree, so visiting the smallest pending directory first yields
//! repositories in exactly lexical order. Subtrees that hold only names
//! `<= after` are never entered, so a page costs the directories on the path
//! to `after` plus those of the page, not the whole store.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The state of one paged walk. Call [`RepoWalk::next_dir`], list that
/// directory, report it with [`RepoWalk::visit`]; repeat until enough
/// repositories were yielded or `next_dir` returns `None`.
#[derive(Debug)]
pub struct RepoWalk {
    after: Option<String>,
    pending: BinaryHeap<Reverse<String>>,
}

impl RepoWalk {
    /// A walk over names strictly after `after` (all names with `None`),
    /// starting at the root directory (the empty name).
    pub fn new(after: Option<&str>) -> Self {
        let mut pending = BinaryHeap::new();
        pending.push(Reverse(String::new()));
        RepoWalk { after: after.map(str::to_owned), pending }
    }

    /// The next directory to list, by its repository-style name (`""` is the
    /// root); `None` when the walk is complete.
    pub fn next_dir(&mut self) -> Option<String> {
        self.pending.pop().map(|Reverse(name)| name)
    }

    /// Puts directories taken with [`RepoWalk::next_dir`] but not yet
    /// visited back (a backend that lists several directories at once).
    pub fn requeue(&mut self, dirs: impl IntoIterator<Item = String>) {
        self.pending.extend(dirs.into_iter().map(Reverse));
    }

    /// Reports what directory `dir` holds: whether it is a repository and the
    /// names of its child directories that may be repository components
    /// (markers such as `_manifests` already left out). Returns `dir` when it
    /// is a repository to yield, which is then the next name in order.
    pub fn visit(&mut self, dir: &str, is_repo: bool, children: impl IntoIterator<Item = String>) -> Option<String> {
        for child in children {
            let name = if dir.is_empty() { child } else { format!("{dir}/{child}") };
            if self.may_hold_names_after(&name) {
                self.pending.push(Reverse(name));
            }
        }
        let yield_it = is_repo && !dir.is_empty() && self.after.as_deref().is_none_or(|a| dir > a);
        yield_it.then(|| dir.to_owned())
    }

    /// Whether `name` or a name below it (`name/…`) sorts after `after`.
    fn may_hold_names_after(&self, name: &str) -> bool {
        let Some(after) = self.after.as_deref() else {
            return true;
        };
        if name >= after {
            return true;
        }
        // `name < after`: only `name/…` can follow, and only if `after`
        // continues `name` with a byte that is `/` or sorts below it.
        after.strip_prefix(name).and_then(|rest| rest.bytes().next()).is_some_and(|b| b <= b'/')
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A tree of directories; `true` marks repositories.
    fn tree(repos: &[&str], plain_dirs: &[&str]) -> BTreeMap<String, bool> {
        let mut t = BTreeMap::new();
        for (list, is_repo) in [(repos, true), (plain_dirs, false)] {
            for r in list {
                let parts: Vec<&str> = r.split('/').collect();
                for i in 1..parts.len() {
                    t.entry(parts[..i].join("/")).or_insert(false);
                }
                t.insert((*r).to_owned(), is_repo);
            }
        }
        t
    }

    /// Runs a walk to the end over `t`, returning the names and the number
    /// of directories listed.
    fn walk(t: &BTreeMap<String, bool>, after: Option<&str>, limit: usize) -> (Vec<String>, usize) {
        let mut w = RepoWalk::new(after);
        let (mut out, mut listed) = (Vec::new(), 0);
        while out.len() < limit {
            let Some(dir) = w.next_dir() else { break };
            listed += 1;
            let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
            let children: Vec<String> = t
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix).filter(|rest| !rest.contains('/')).map(str::to_owned))
                .collect();
            let is_repo = t.get(&dir).copied().unwrap_or(false);
            out.extend(w.visit(&dir, is_repo, children));
        }
        (out, listed)
    }

    const NAMES: &[&str] = &[
        "a",
        "a-b",
        "a.c",
        "a/0",
        "a/x",
        "a_d",
        "ab",
        "docker.io/library/a",
        "docker.io/library/a-b",
        "docker.io/library/a/b",
        "docker.io/library/a0",
        "docker.io/libraryz",
        "docker.io/libraryz/x",
        "z",
    ];

    #[test]
    fn yields_every_repository_in_bytewise_order_for_every_after() {
        let t = tree(NAMES, &["docker.io/empty/dir", "docker.io/library/gone"]);
        let mut sorted: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        sorted.sort();
        assert_eq!(walk(&t, None, usize::MAX).0, sorted, "full walk");
        // Every name and some non-names as `after`, every page size.
        let mut afters: Vec<&str> = NAMES.to_vec();
        afters.extend(["", "0", "a/", "a/1", "docker.io/library", "docker.io/library/", "docker.io/m", "zz"]);
        for after in afters {
            let want: Vec<String> = sorted.iter().filter(|n| n.as_str() > after).cloned().collect();
            for limit in 1..=want.len() + 1 {
                let (got, _) = walk(&t, Some(after), limit);
                assert_eq!(got, want[..limit.min(want.len())], "after {after:?} limit {limit}");
            }
        }
    }

    #[test]
    fn a_page_lists_only_the_path_and_the_page_not_the_store() {
        let mut names: Vec<String> = (0..2000).map(|i| format!("org/team{:02}/repo{i:05}", i % 20)).collect();
        names.sort();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let t = tree(&refs, &[]);
        let (page, listed) = walk(&t, Some(&names[1000]), 10);
        assert_eq!(page, names[1001..1011]);
        // root, org, one team, its ten repositories (+ at most one extra dir).
        assert!(listed <= 14, "listed {listed} directories for a page of 10");
    }
}

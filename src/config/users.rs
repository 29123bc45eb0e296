//! The user table for RFC 1929 username/password authentication.

use super::text_file;
use crate::wire::printable::Printable;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

type Table = HashMap<Vec<u8>, Vec<u8>>;

/// The users one or more services accept. Clones share the table, so one reload
/// (SIGHUP) reaches every service that was given them.
///
/// A service given any user or users file requires a login for its whole life, whatever
/// the table holds: it never falls back to no authentication.
#[derive(Clone, Default)]
pub struct Users {
    /// Where the users come from, in the order given: a reload reads the files again and
    /// builds the table in the same order, so the same source wins a name as at start-up.
    sources: Vec<Source>,
    table: Arc<RwLock<Arc<Table>>>,
}

#[derive(Clone)]
enum Source {
    /// Given on the command line or in a URL.
    User(Vec<u8>, Vec<u8>),
    /// `--users FILE`.
    File(PathBuf),
}

// Written by hand so passwords never reach a log line.
impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Users({} configured)", self.count())
    }
}

impl Users {
    fn current(&self) -> Arc<Table> {
        Arc::clone(&self.table.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn update(&self, change: impl FnOnce(&mut Table)) {
        let mut table = self.table.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        change(Arc::make_mut(&mut table));
    }

    /// Whether clients must log in: any user or users file was given. Fixed once
    /// configured; what the table holds now does not change it.
    pub fn require_login(&self) -> bool {
        !self.sources.is_empty()
    }

    /// How many users the table in force holds.
    pub fn count(&self) -> usize {
        self.current().len()
    }

    /// Adds `NAME:PASSWORD`; the password may itself contain colons.
    pub fn add_entry(&mut self, entry: &str) -> Result<(), String> {
        let (name, password) = entry.split_once(':').ok_or("expected NAME:PASSWORD")?;
        self.add(name.as_bytes(), password.as_bytes())
    }

    /// Adds a user, within the lengths RFC 1929 can carry; it replaces one of the same
    /// name given before it.
    pub fn add(&mut self, name: &[u8], password: &[u8]) -> Result<(), String> {
        let (name, password) = checked(name, password)?;
        self.sources.push(Source::User(name.clone(), password.clone()));
        self.update(|table| {
            table.insert(name, password);
        });
        Ok(())
    }

    /// Reads a users file (the format is [`read_file`]'s); its users replace any of the
    /// same names given before it. An error names the file, and the line where there is one.
    pub fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let read = read_file(path)?;
        self.sources.push(Source::File(path.to_owned()));
        self.update(|table| table.extend(read));
        Ok(())
    }

    /// Whether `other` is a clone of these users, sharing the table a reload swaps.
    pub fn shares_table_with(&self, other: &Users) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
    }

    /// Whether any users come from a file (something a reload would read again).
    pub fn has_files(&self) -> bool {
        self.sources.iter().any(|source| matches!(source, Source::File(_)))
    }

    /// Builds the table again from every source in the order given, reading the files
    /// again, and swaps it in whole; on any error (a file unreadable, empty, changing
    /// while read, or with a bad line) the table in force stays. Returns how many users
    /// there are now.
    pub fn reload(&self) -> Result<usize, String> {
        let mut table = Table::new();
        for source in &self.sources {
            match source {
                Source::User(name, password) => {
                    table.insert(name.clone(), password.clone());
                }
                Source::File(path) => table.extend(read_file(path)?),
            }
        }
        let count = table.len();
        *self.table.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(table);
        Ok(count)
    }

    /// Whether the credentials match a configured user. The password comparison takes
    /// the same time wherever the first difference is, and an unknown name costs a
    /// comparison too, so timing tells an attacker little.
    pub fn verify(&self, name: &[u8], password: &[u8]) -> bool {
        match self.current().get(name) {
            Some(expected) => constant_time_eq(expected, password),
            None => {
                constant_time_eq(password, password);
                false
            }
        }
    }
}

/// A user within the lengths RFC 1929 can carry: a name and a password of 1 to 255 bytes.
fn checked(name: &[u8], password: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("the name must be 1 to 255 bytes".into());
    }
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    if password.len() > 255 {
        return Err("the password must be at most 255 bytes".into());
    }
    Ok((name.to_vec(), password.to_vec()))
}

/// Reads a users file: UTF-8 text, a byte-order mark at its start dropped, lines ending in
/// LF or CRLF. A line blank or holding only whitespace is skipped, and so is one whose
/// first character other than whitespace is `#`. Every other line is `NAME:PASSWORD`: the
/// name up to the first `:`, with no whitespace at either end; the password is the rest of
/// the line exactly, spaces, `:` and `#` included. A line that is not that, a name given
/// twice, and a file with no user at all are errors.
fn read_file(path: &Path) -> Result<Table, String> {
    let shown = path.display().to_string();
    let shown = Printable(&shown);
    let text = text_file::read_whole(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut table = Table::new();
    let mut lines_of = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let at = |e: String| format!("{shown}:{number}: {e}");
        let (name, password) = line.split_once(':').ok_or_else(|| at("expected NAME:PASSWORD".into()))?;
        if name.trim() != name {
            return Err(at(format!("the name {} starts or ends with whitespace", Printable(name))));
        }
        let (name, password) = checked(name.as_bytes(), password.as_bytes()).map_err(at)?;
        match table.entry(name) {
            Entry::Occupied(entry) => {
                let first: usize = lines_of[entry.key()];
                return Err(at(format!(
                    "user {} is already on line {first}",
                    Printable(&String::from_utf8_lossy(entry.key()))
                )));
            }
            Entry::Vacant(entry) => {
                lines_of.insert(entry.key().clone(), number);
                entry.insert(password);
            }
        }
    }
    if table.is_empty() {
        return Err(format!("{shown}: no users (a users file needs at least one NAME:PASSWORD line)"));
    }
    Ok(table)
}

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_exact_credentials() {
        let mut users = Users::default();
        users.add_entry("alice:s3:cret").unwrap();
        assert!(users.verify(b"alice", b"s3:cret"));
        assert!(!users.verify(b"alice", b"s3:cre"));
        assert!(!users.verify(b"alice", b"s3:crett"));
        assert!(!users.verify(b"alice", b""));
        assert!(!users.verify(b"bob", b"s3:cret"));
    }

    #[test]
    fn rejects_bad_entries() {
        let mut users = Users::default();
        assert!(users.add_entry("nocolon").is_err());
        assert!(users.add_entry(":pw").is_err());
        assert_eq!(users.add_entry("alice:"), Err("the password is empty".into()));
        assert!(users.add_entry(&format!("u:{}", "x".repeat(256))).is_err());
        assert!(!users.require_login());
    }

    /// A users file in a directory of its own, removed with it when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("burrowd-users-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_a_users_file_and_names_a_bad_line() {
        let dir = Scratch::new("read");
        let good = dir.file("good", "\u{feff}alice:one\r\n# team\r\n\n  # note:x\n\t\nbob:two # not a comment\r\n");
        let mut users = Users::default();
        users.add_file(&good).unwrap();
        assert_eq!(users.count(), 2, "the indented comment is no user");
        assert!(users.verify(b"alice", b"one"), "the byte-order mark and CR are not part of it");
        assert!(users.verify(b"bob", b"two # not a comment"), "a password is the rest of the line");
        let table = [
            ("alice:one\nbroken\n", ":2: expected NAME:PASSWORD"),
            ("alice:\n", ":1: the password is empty"),
            ("bob:x\nalice:one\r\nbob:y\n", ":3: user bob is already on line 1"),
            (" alice:one\n", ":1: the name \" alice\" starts or ends with whitespace"),
            ("", ": no users (a users file needs at least one NAME:PASSWORD line)"),
            ("# nobody yet\n\n", ": no users (a users file needs at least one NAME:PASSWORD line)"),
        ];
        for (text, want) in table {
            let bad = dir.file("bad", text);
            let err = Users::default().add_file(&bad).unwrap_err();
            // The path is shown quoted where it is not plain text (a Windows path's backslashes).
            assert!(err.contains("bad") && err.ends_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_reload_keeps_the_order_and_the_table_in_force_on_any_error() {
        let dir = Scratch::new("reload");
        let file = dir.file("users", "alice:file\nbob:two\n");
        let mut users = Users::default();
        users.add_file(&file).unwrap();
        users.add_entry("alice:cli").unwrap();
        users.add_entry("carol:three").unwrap();
        let shared = users.clone();
        let in_force =
            |alice: &[u8]| users.verify(b"alice", alice) && users.verify(b"carol", b"three") && users.require_login();
        assert!(in_force(b"cli"), "the later source wins");
        assert_eq!(shared.reload(), Ok(3));
        assert!(in_force(b"cli") && !users.verify(b"alice", b"file"), "and still wins after a reload");
        std::fs::write(&file, "bob:new\n").unwrap();
        assert_eq!(shared.reload(), Ok(3));
        assert!(users.verify(b"bob", b"new") && in_force(b"cli"));
        for bad in ["", "broken\n", "bob:\n", "bob:1\nbob:2\n"] {
            std::fs::write(&file, bad).unwrap();
            assert!(shared.reload().is_err(), "{bad:?}");
            assert!(users.verify(b"bob", b"new") && in_force(b"cli"), "{bad:?}: the old table stays");
        }
        std::fs::remove_file(&file).unwrap();
        assert!(shared.reload().is_err());
        assert!(users.verify(b"bob", b"new"), "an unreadable file keeps the old table too");
    }
}

//! The user table for RFC 1929 username/password authentication.

use crate::wire::printable::Printable;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

type Table = HashMap<Vec<u8>, Vec<u8>>;

/// The users one or more services accept. Clones share the table, so one reload
/// (SIGHUP) reaches every service that was given them.
#[derive(Clone, Default)]
pub struct Users {
    /// Given on the command line or in a URL: kept, since a reload reads only files.
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    files: Vec<PathBuf>,
    table: Arc<RwLock<Arc<Table>>>,
}

// Written by hand so passwords never reach a log line.
impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Users({} configured)", self.len())
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

    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Adds `NAME:PASSWORD`; the password may itself contain colons.
    pub fn add_entry(&mut self, entry: &str) -> Result<(), String> {
        let (name, password) = entry.split_once(':').ok_or("expected NAME:PASSWORD")?;
        self.add(name.as_bytes(), password.as_bytes())
    }

    /// Adds a user, within the lengths RFC 1929 can carry.
    pub fn add(&mut self, name: &[u8], password: &[u8]) -> Result<(), String> {
        let (name, password) = checked(name, password)?;
        self.entries.push((name.clone(), password.clone()));
        self.update(|table| {
            table.insert(name, password);
        });
        Ok(())
    }

    /// Reads one `name:password` per line; blank lines and lines starting with `#` are
    /// skipped. An error names the line. A reload reads the file again.
    pub fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let read = read_file(path)?;
        self.files.push(path.to_owned());
        self.update(|table| table.extend(read));
        Ok(())
    }

    /// Whether `other` is a clone of these users, sharing the table a reload swaps.
    pub fn shares_table_with(&self, other: &Users) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
    }

    /// Whether any users come from a file (something a reload would read again).
    pub fn has_files(&self) -> bool {
        !self.files.is_empty()
    }

    /// Reads the users files again; on an error the table in force stays. Returns how
    /// many users there are now.
    pub fn reload(&self) -> Result<usize, String> {
        let mut table: Table = self.entries.iter().cloned().collect();
        for path in &self.files {
            table.extend(read_file(path)?);
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

/// A user within the lengths RFC 1929 can carry.
fn checked(name: &[u8], password: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    if name.is_empty() || name.len() > 255 || password.len() > 255 {
        return Err("name must be 1 to 255 bytes and password at most 255".into());
    }
    Ok((name.to_vec(), password.to_vec()))
}

fn read_file(path: &Path) -> Result<Table, String> {
    let shown = path.display().to_string();
    let shown = Printable(&shown);
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut table = Table::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = line.split_once(':').ok_or_else(|| "expected NAME:PASSWORD".to_owned());
        let (name, password) = entry
            .and_then(|(name, password)| checked(name.as_bytes(), password.as_bytes()))
            .map_err(|e| format!("{shown}:{}: {e}", number + 1))?;
        table.insert(name, password);
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
        assert!(users.add_entry(&format!("u:{}", "x".repeat(256))).is_err());
        assert!(users.is_empty());
    }

    #[test]
    fn reads_a_users_file_and_names_a_bad_line() {
        let dir = std::env::temp_dir().join(format!("burrowd-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "# team\nalice:one\n\nbob:two\r\n").unwrap();
        let mut users = Users::default();
        users.add_file(&good).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.verify(b"bob", b"two"));
        let bad = dir.join("bad");
        std::fs::write(&bad, "alice:one\nbroken\n").unwrap();
        let err = Users::default().add_file(&bad).unwrap_err();
        // The path is shown quoted where it is not plain text (a Windows path's backslashes).
        assert!(err.contains("bad") && err.ends_with(":2: expected NAME:PASSWORD"), "{err}");

        // A reload reads the file again, keeps command-line users, and keeps the table in
        // force when the file has become bad.
        users.add_entry("carol:three").unwrap();
        let shared = users.clone();
        std::fs::write(&good, "alice:new\n").unwrap();
        assert_eq!(shared.reload(), Ok(2));
        assert!(users.verify(b"alice", b"new") && !users.verify(b"bob", b"two") && users.verify(b"carol", b"three"));
        std::fs::write(&good, "broken\n").unwrap();
        assert!(shared.reload().is_err());
        assert!(users.verify(b"alice", b"new"), "the old table stays");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The user table for RFC 1929 username/password authentication.

use crate::wire::printable::Printable;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

#[derive(Clone, Default)]
pub struct Users {
    passwords: HashMap<Vec<u8>, Vec<u8>>,
}

// Written by hand so passwords never reach a log line.
impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Users({} configured)", self.passwords.len())
    }
}

impl Users {
    pub fn is_empty(&self) -> bool {
        self.passwords.is_empty()
    }

    pub fn len(&self) -> usize {
        self.passwords.len()
    }

    /// Adds `NAME:PASSWORD`; the password may itself contain colons.
    pub fn add_entry(&mut self, entry: &str) -> Result<(), String> {
        let (name, password) = entry.split_once(':').ok_or("expected NAME:PASSWORD")?;
        self.add(name.as_bytes(), password.as_bytes())
    }

    /// Adds a user, within the lengths RFC 1929 can carry.
    pub fn add(&mut self, name: &[u8], password: &[u8]) -> Result<(), String> {
        if name.is_empty() || name.len() > 255 || password.len() > 255 {
            return Err("name must be 1 to 255 bytes and password at most 255".into());
        }
        self.passwords.insert(name.to_vec(), password.to_vec());
        Ok(())
    }

    /// Reads one `name:password` per line; blank lines and lines starting with `#` are
    /// skipped. An error names the line.
    pub fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let shown = path.display().to_string();
        let shown = Printable(&shown);
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            self.add_entry(line).map_err(|e| format!("{shown} line {}: {e}", number + 1))?;
        }
        Ok(())
    }

    /// Whether the credentials match a configured user. The password comparison takes
    /// the same time wherever the first difference is, and an unknown name costs a
    /// comparison too, so timing tells an attacker little.
    pub fn verify(&self, name: &[u8], password: &[u8]) -> bool {
        match self.passwords.get(name) {
            Some(expected) => constant_time_eq(expected, password),
            None => {
                constant_time_eq(password, password);
                false
            }
        }
    }
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
        assert!(err.contains("line 2"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

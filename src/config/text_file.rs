//! Reading a file that governs access (a users or rules file) whole, or not at all.

use std::fs::{self, Metadata};
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// Reads `path` as UTF-8 text, a leading byte-order mark dropped. A regular file whose size
/// or modification time is not the same after the read as before it was being rewritten
/// meanwhile (by an editor or a config tool), so that reading is refused rather than half
/// taken. The error is the reason alone: the caller names the file.
pub(crate) fn read_whole(path: &Path) -> Result<String, String> {
    read_whole_with(path, |path| fs::read(path))
}

/// [`read_whole`], reading the bytes with `read`.
fn read_whole_with(path: &Path, read: impl FnOnce(&Path) -> io::Result<Vec<u8>>) -> Result<String, String> {
    let before = fs::metadata(path).map_err(|e| e.to_string())?;
    let bytes = read(path).map_err(|e| e.to_string())?;
    // A pipe (`--users <(...)`) has no size or time that says it is complete; it is read to its end.
    if before.is_file() && stamp(&before) != stamp(&fs::metadata(path).map_err(|e| e.to_string())?) {
        return Err("changed while it was read (its size or modification time moved)".into());
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text (an invalid byte at offset {})", e.utf8_error().valid_up_to()))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

fn stamp(metadata: &Metadata) -> (u64, Option<SystemTime>) {
    (metadata.len(), metadata.modified().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_whole_without_its_byte_order_mark_or_refused() {
        let dir = std::env::temp_dir().join(format!("burrowd-text-file-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users");
        fs::write(&file, "\u{feff}alice:pw\r\n").unwrap();
        assert_eq!(read_whole(&file).unwrap(), "alice:pw\r\n");
        fs::write(&file, b"alice:\xff\n").unwrap();
        assert!(read_whole(&file).unwrap_err().starts_with("not UTF-8 text"));
        // A writer that appends while the file is being read.
        let appending = |path: &Path| {
            let bytes = fs::read(path)?;
            fs::write(path, "alice:pw\nbob:pw\n")?;
            Ok(bytes)
        };
        fs::write(&file, "alice:pw\n").unwrap();
        let err = read_whole_with(&file, appending).unwrap_err();
        assert!(err.starts_with("changed while it was read"), "{err}");
        assert!(read_whole(&dir.join("missing")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}

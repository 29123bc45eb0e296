//! The config file (`--config FILE`): the command line's flags, one per line, written
//! without their leading dashes (`listen 0.0.0.0:1080`, `allow from 10.0.0.0/8`, `socks4`).
//!
//! This is text to flags only; what a flag means is decided where the command line's flags
//! are (`cli.rs`), so every flag works here, those added later included, with no list of
//! them to keep in step.

use std::path::Path;

/// One line's flag, as the command line would have given it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFlag {
    /// `--listen`; a one-letter name is a short flag (`L` is `-L`), as written with dashes.
    pub flag: String,
    /// The rest of the line, trimmed, so a rule's spaces are kept; `None` when nothing follows.
    pub value: Option<String>,
    /// `FILE:LINE`, for errors and for naming the line a rule came from.
    pub at: String,
}

/// Flags whose value is a file. A relative one is taken from the config file's directory,
/// as a user who keeps them side by side in /etc/burrowd expects, not from wherever
/// burrowd happens to be started.
const PATH_FLAGS: [&str; 2] = ["--users", "--rules"];

/// Reads the file; an error that it cannot be read names it.
pub fn read(path: &Path) -> Result<Vec<FileFlag>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--config: {}: {e}", path.display()))?;
    Ok(parse(&text, path))
}

/// One flag per line that holds one; `path` names the lines and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Vec<FileFlag> {
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut flags = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = strip_comment(line).trim();
        if line.is_empty() {
            continue;
        }
        let (name, value) = match line.split_once(char::is_whitespace) {
            Some((name, value)) => (name, Some(value.trim())),
            None => (line, None),
        };
        let flag = match name {
            _ if name.starts_with('-') => name.to_owned(),
            _ if name.chars().count() == 1 => format!("-{name}"),
            _ => format!("--{name}"),
        };
        let value = value.map(|value| match PATH_FLAGS.contains(&flag.as_str()) {
            true => dir.join(value).to_string_lossy().into_owned(),
            false => value.to_owned(),
        });
        flags.push(FileFlag { flag, value, at: format!("{}:{}", path.display(), index + 1) });
    }
    flags
}

/// A `#` at the start of a line or after a blank starts a comment; one inside a word (a
/// password `p#ss`, a URL) does not.
fn strip_comment(line: &str) -> &str {
    let mut after_blank = true;
    for (i, c) in line.char_indices() {
        if c == '#' && after_blank {
            return &line[..i];
        }
        after_blank = c.is_whitespace();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(text: &str) -> Vec<(String, Option<String>, String)> {
        parse(text, Path::new("/etc/burrowd/burrowd.conf"))
            .into_iter()
            .map(|f| (f.flag, f.value, f.at.rsplit(':').next().unwrap().to_owned()))
            .collect()
    }

    fn flag(name: &str, value: Option<&str>, line: usize) -> (String, Option<String>, String) {
        (name.to_owned(), value.map(str::to_owned), line.to_string())
    }

    #[test]
    fn one_flag_per_line_comments_and_blank_lines_skipped() {
        let text =
            "# burrowd\n\nlisten 0.0.0.0:1080\n  max-clients\t2048   # two per core\nsocks4\n   \n#listen [::]:1080\n";
        assert_eq!(
            flags(text),
            [
                flag("--listen", Some("0.0.0.0:1080"), 3),
                flag("--max-clients", Some("2048"), 4),
                flag("--socks4", None, 5)
            ]
        );
    }

    #[test]
    fn the_value_is_the_rest_of_the_line_with_its_spaces() {
        assert_eq!(
            flags("allow   from 10.0.0.0/8  cmd connect   port 443 \ndeny to .ads.example # no ads\n"),
            [
                flag("--allow", Some("from 10.0.0.0/8  cmd connect   port 443"), 1),
                flag("--deny", Some("to .ads.example"), 2)
            ]
        );
    }

    #[test]
    fn a_hash_inside_a_word_is_kept() {
        assert_eq!(
            flags("user alice:p#ss\nL socks://bob:x%23y@127.0.0.1:1080#frag # comment\n"),
            [flag("--user", Some("alice:p#ss"), 1), flag("-L", Some("socks://bob:x%23y@127.0.0.1:1080#frag"), 2)]
        );
    }

    #[test]
    fn one_letter_names_are_short_flags_and_dashes_may_be_kept() {
        assert_eq!(
            flags("L tcp://:2222/10.0.0.5:22\nF socks5://h:1080\n--listen [::1]:1080\n-l 127.0.0.1:1080\nv\n"),
            [
                flag("-L", Some("tcp://:2222/10.0.0.5:22"), 1),
                flag("-F", Some("socks5://h:1080"), 2),
                flag("--listen", Some("[::1]:1080"), 3),
                flag("-l", Some("127.0.0.1:1080"), 4),
                flag("-v", None, 5),
            ]
        );
    }

    #[test]
    fn relative_paths_are_taken_from_the_files_directory() {
        // Joined as the system joins paths (with `\` on Windows).
        let in_dir = |name: &str| Path::new("/etc/burrowd").join(name).display().to_string();
        assert_eq!(
            flags("users users.txt\nrules /srv/rules.conf\nrules ../shared/rules.conf\nlisten users.txt\n"),
            [
                flag("--users", Some(&in_dir("users.txt")), 1),
                flag("--rules", Some("/srv/rules.conf"), 2),
                flag("--rules", Some(&in_dir("../shared/rules.conf")), 3),
                flag("--listen", Some("users.txt"), 4),
            ]
        );
        // A config file named without a directory: its paths stay relative to the same place.
        let flags = parse("users u\n", Path::new("burrowd.conf"));
        assert_eq!((flags[0].value.as_deref(), flags[0].at.as_str()), (Some("u"), "burrowd.conf:1"));
    }

    #[test]
    fn lines_are_named_file_colon_line() {
        let flags = parse("\n# x\nbogus 1\n", Path::new("/etc/burrowd/burrowd.conf"));
        assert_eq!(flags[0].at, "/etc/burrowd/burrowd.conf:3");
    }
}

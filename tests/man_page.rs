//! The man page documents every option `burrowd --help` lists, and no other: a new flag
//! without its documentation fails here.

mod common;

use common::*;
use std::collections::BTreeSet;

/// The options in the first column of `--help`'s option lines (indented at most six
/// blanks; deeper lines continue a description).
fn help_options(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter(|line| {
            let indent = line.len() - line.trim_start().len();
            (1..=6).contains(&indent) && line.trim_start().starts_with('-')
        })
        .flat_map(|line| {
            let column = line.trim_start().split("  ").next().unwrap_or_default();
            column.split([' ', ',']).filter(|word| is_option(word)).map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

/// The options the man page's OPTIONS section gives an entry (`.It Fl -listen ...`).
fn man_options(man: &str) -> BTreeSet<String> {
    let section = man.split(".Sh OPTIONS\n").nth(1).expect("an OPTIONS section").split("\n.Sh ").next().unwrap();
    section
        .lines()
        .filter_map(|line| line.strip_prefix(".It "))
        .flat_map(|item| {
            let words: Vec<&str> = item.split_whitespace().collect();
            words
                .windows(2)
                .filter(|pair| pair[0] == "Fl")
                .map(|pair| format!("-{}", pair[1]))
                .filter(|option| is_option(option))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn is_option(word: &str) -> bool {
    let name = word.strip_prefix("--").or_else(|| word.strip_prefix('-'));
    name.is_some_and(|name| {
        name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn the_man_page_documents_exactly_the_options_help_lists() {
    let help = String::from_utf8(run_burrowd(&["--help"]).stdout).unwrap();
    let man = t!(std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/doc/burrowd.8")));
    let (help, man) = (help_options(&help), man_options(&man));
    assert!(help.len() > 30 && help.contains("--listen") && help.contains("-L"), "help parsed: {help:?}");
    let undocumented: Vec<_> = help.difference(&man).collect();
    let unknown: Vec<_> = man.difference(&help).collect();
    assert!(undocumented.is_empty(), "in --help but not in doc/burrowd.8: {undocumented:?}");
    assert!(unknown.is_empty(), "in doc/burrowd.8 but not in --help: {unknown:?}");
}

#[test]
fn option_lists_are_read_from_both_forms() {
    let help = "Options:\n  -l, --listen ADDR:PORT       listen\n                               --not-this)\n      --allow RULE, --deny RULE\n  -F socks5://[U:P@]H:P\n";
    assert_eq!(help_options(help), ["-l", "--listen", "--allow", "--deny", "-F"].map(String::from).into());
    let man = ".Sh OPTIONS\n.Bl -tag\n.It Fl l , Fl -listen Ar addr\ntext Fl -not-an-entry\n.It Fl -relay Cm splice | copy\n.El\n.Sh SIGNALS\n.It Fl -elsewhere\n";
    assert_eq!(man_options(man), ["-l", "--listen", "--relay"].map(String::from).into());
}

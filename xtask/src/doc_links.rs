//! Every relative link in the README and docs/ resolves: the file exists
//! and, where the link names an `#anchor`, that file has a heading with
//! GitHub's slug for it. Runs with the unit tests (`cargo xtask test`,
//! no privileges).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::workspace_root;

/// The markdown files whose links are checked.
fn documents() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = vec![root.join("README.md"), root.join("manifests/README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of a markdown file outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// A line with its inline code spans removed (links inside them are text).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        }
    }
    out
}

/// The targets of the `[text](target)` links (and images) on a line.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => {
                targets.push(after[..end].trim().to_string());
                rest = &after[end..];
            }
            None => break,
        }
    }
    targets
}

/// The text GitHub renders for a heading: code spans and link syntax dropped.
fn rendered_heading(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' | '*' => {}
            ']' if chars.peek() == Some(&'(') => {
                // Skip the link's target.
                for c in chars.by_ref() {
                    if c == ')' {
                        break;
                    }
                }
            }
            '[' => {}
            _ => out.push(c),
        }
    }
    out
}

/// GitHub's anchor for a heading: lowercase, spaces to '-', every other
/// character but letters, digits, '-' and '_' dropped.
fn slug(heading: &str) -> String {
    rendered_heading(heading)
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown file's headings, repeated ones numbered as
/// GitHub numbers them (`name`, `name-1`, ...).
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = Vec::new();
    for line in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim().trim_end_matches('#'));
        let count = seen.entry(base.clone()).or_insert(0);
        anchors.push(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// What is wrong with each relative link of `file` (empty when all resolve).
fn broken_links(file: &Path) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap();
    let mut broken = Vec::new();
    for target in prose_lines(&text).into_iter().flat_map(link_targets) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let linked = if path.is_empty() {
            file.to_path_buf()
        } else {
            file.parent().unwrap().join(path)
        };
        if !linked.exists() {
            broken.push(format!("{target}: {} does not exist", linked.display()));
            continue;
        }
        let Some(anchor) = anchor else { continue };
        if linked.is_dir() || linked.extension().is_none_or(|e| e != "md") {
            broken.push(format!(
                "{target}: an anchor into a file that is not markdown"
            ));
            continue;
        }
        let headings = anchors(&fs::read_to_string(&linked).unwrap());
        if !headings.iter().any(|h| h == anchor) {
            broken.push(format!(
                "{target}: {} has no heading `#{anchor}` (it has {headings:?})",
                linked.display()
            ));
        }
    }
    broken
}

#[test]
fn slugs_follow_githubs_rules() {
    assert_eq!(
        slug("Targets (at 1,000 interfaces, this machine)"),
        "targets-at-1000-interfaces-this-machine"
    );
    assert_eq!(slug("The `snapshot` JSON"), "the-snapshot-json");
    assert_eq!(slug("Exposure and security"), "exposure-and-security");
    assert_eq!(
        slug("snake_case and kebab-case"),
        "snake_case-and-kebab-case"
    );
    assert_eq!(slug("See [the docs](x.md#y) now"), "see-the-docs-now");
    assert_eq!(
        anchors("# A\n## A\n```\n# not a heading\n```\n### A\n"),
        ["a", "a-1", "a-2"]
    );
    assert_eq!(
        link_targets("[a](b.md#c) and `[x](not-a-link)` and ![i](p.png)"),
        ["b.md#c", "p.png"]
    );
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let documents = documents();
    assert!(
        documents.len() >= 5,
        "README, manifests/README and docs/*.md"
    );
    let broken: Vec<String> = documents
        .iter()
        .flat_map(|file| {
            broken_links(file)
                .into_iter()
                .map(move |problem| format!("{}: {problem}", file.display()))
        })
        .collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

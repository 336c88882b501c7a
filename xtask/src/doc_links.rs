//! Every relative link in the README and docs/ resolves: the file exists
//! and, where the link names an `#anchor`, that file has a heading with
//! GitHub's slug for it. So does every workspace path named in the
//! manifests, the code and its comments (`docs/metrics.md#kernel-memory-of-the-maps`).
//! Runs with the unit tests (`cargo xtask test`, no privileges).

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

/// Top-level directories whose paths are checked where code and manifests
/// name them.
const TREES: [&str; 9] = [
    "docs/",
    "manifests/",
    "collector/",
    "collector-common/",
    "collector-ebpf/",
    "xtask/",
    "bench/",
    "fuzz/",
    ".ci/",
];

/// Directories whose files are data, not prose or code.
const NOT_SCANNED: [&str; 5] = [
    "target",
    ".git",
    "fuzz/corpus",
    "fuzz/artifacts",
    "collector/tests/fixtures",
];

/// Manifests, code, scripts and the Dockerfile: every file that may name a
/// path or a section of the docs in a comment or a string.
fn sources() -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if NOT_SCANNED.contains(&relative.as_str()) {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, found);
                continue;
            }
            let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            let scanned = matches!(extension, "rs" | "yaml" | "yml" | "py" | "toml" | "sh")
                || (extension == "json" && relative.starts_with("manifests/"))
                || relative == "Dockerfile"
                || relative == ".ci/run";
            if scanned {
                found.push(path);
            }
        }
    }
    let root = workspace_root();
    let mut found = Vec::new();
    walk(&root, &root, &mut found);
    found
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

/// The workspace paths named in `text`, each with its `#anchor` if any:
/// a run of path characters starting with one of [`TREES`] where no path
/// character precedes it (so `https://x/docs/` and `sub/docs/` are not).
fn named_paths(text: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for (at, _) in text.char_indices() {
        let rest = &text[at..];
        if !TREES.iter().any(|tree| rest.starts_with(tree)) {
            continue;
        }
        if text[..at].chars().next_back().is_some_and(path_char) {
            continue;
        }
        let end = rest.find(|c: char| !path_char(c)).unwrap_or(rest.len());
        // A sentence's full stop is not part of the path.
        let path = rest[..end].trim_end_matches('.').to_string();
        let after = &rest[path.len()..];
        let anchor = after.strip_prefix('#').map(|anchor| {
            let end = anchor
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(anchor.len());
            anchor[..end].to_string()
        });
        found.push((path, anchor.filter(|a| !a.is_empty())));
    }
    found
}

/// What is wrong with each workspace path `file` names (empty when all
/// exist, with their sections).
fn broken_references(file: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(file) else {
        return Vec::new();
    };
    let root = workspace_root();
    let mut broken = Vec::new();
    for (line, content) in text.lines().enumerate() {
        for (path, anchor) in named_paths(content) {
            // Directories are often made at run time (fuzz/corpus, target
            // dirs); a named file, or a section, must exist.
            let is_file = path
                .rsplit('/')
                .next()
                .is_some_and(|name| name.contains('.'));
            if !is_file && anchor.is_none() {
                continue;
            }
            let named = root.join(&path);
            let place = format!("line {}: {path}", line + 1);
            if !named.exists() {
                broken.push(format!("{place} does not exist"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if named.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let headings = anchors(&fs::read_to_string(&named).unwrap());
            if !headings.contains(&anchor) {
                broken.push(format!(
                    "{place}#{anchor}: no such section (it has {headings:?})"
                ));
            }
        }
    }
    broken
}

#[test]
fn paths_named_in_code_and_manifests_are_found_with_their_section() {
    assert_eq!(
        named_paths("// see docs/metrics.md#kernel-memory-of-the-maps."),
        [(
            "docs/metrics.md".to_string(),
            Some("kernel-memory-of-the-maps".to_string())
        )]
    );
    assert_eq!(
        named_paths("(docs/bench), \"manifests/base\" and https://x.io/docs/a.md or my/docs/b.md"),
        [
            ("docs/bench".to_string(), None),
            ("manifests/base".to_string(), None)
        ]
    );
}

#[test]
fn a_missing_file_or_section_named_in_a_comment_is_reported() {
    // Put together here, so this file itself names no missing path.
    let (metrics, gone) = ("docs/metrics.md", ["docs/", "gone.md"].concat());
    let bad_section = format!("{metrics}#{}", "the-readme-formula");
    let file = std::env::temp_dir().join(format!("doc-links-{}.yaml", std::process::id()));
    fs::write(
        &file,
        format!(
            "# sizing: {metrics}#kernel-memory-of-the-maps\n# ({bad_section}) and {gone}, fuzz/corpus\n"
        ),
    )
    .unwrap();
    let broken = broken_references(&file);
    fs::remove_file(&file).unwrap();
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken[0].starts_with(&format!("line 2: {bad_section}: no such section")));
    assert!(broken[1].starts_with(&format!("line 2: {gone} does not exist")));
}

#[test]
fn every_path_named_in_code_and_manifests_exists_with_its_section() {
    let sources = sources();
    let root = workspace_root();
    for expected in [
        "manifests/base/daemonset.yaml",
        "collector/src/cli.rs",
        "collector-common/src/lib.rs",
        ".ci/run",
    ] {
        assert!(
            sources.contains(&root.join(expected)),
            "{expected} not scanned"
        );
    }
    let broken: Vec<String> = sources
        .iter()
        .flat_map(|file| {
            broken_references(file)
                .into_iter()
                .map(move |problem| format!("{}: {problem}", file.display()))
        })
        .collect();
    assert!(
        broken.is_empty(),
        "broken references:\n{}",
        broken.join("\n")
    );
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

//! The conntrack table of the collector's own network namespace:
//! `/proc/net/stat/nf_conntrack` (one row of hex counters per CPU under a
//! header naming the columns) and `/proc/sys/net/netfilter/nf_conntrack_count`
//! and `nf_conntrack_max`. All three are per network namespace and follow
//! the reading process's, so under hostNetwork they are the node's table,
//! the one pods' traffic to Services is DNATed through. They are mode 0444:
//! no capability is needed.
//!
//! A kernel without conntrack (the module not loaded) has none of the
//! files: nothing is served and nothing counted. A file that is there but
//! does not read or parse is an error of this collection; what the other
//! files gave is still served.

pub mod parse;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::model::Conntrack;
use parse::{parse_stat, parse_value, ParseError, MAX_FILE_BYTES};

/// Where the files are: the real ones, or a test's.
#[derive(Debug, Clone)]
pub struct ConntrackSource {
    /// `/proc/net/stat/nf_conntrack`.
    stat: PathBuf,
    /// `/proc/sys/net/netfilter`, holding `nf_conntrack_count` and `_max`.
    sysctl_dir: PathBuf,
}

impl Default for ConntrackSource {
    fn default() -> Self {
        ConntrackSource::new(
            "/proc/net/stat/nf_conntrack".into(),
            "/proc/sys/net/netfilter".into(),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse { path: String, source: ParseError },
}

impl ConntrackSource {
    pub fn new(stat: PathBuf, sysctl_dir: PathBuf) -> ConntrackSource {
        ConntrackSource { stat, sysctl_dir }
    }

    /// What could be read, and the errors of the files that are there but
    /// did not read or parse. `None` when every file is missing.
    pub fn read(&self) -> (Option<Conntrack>, Vec<ConntrackError>) {
        let mut errors = Vec::new();
        let mut present = false;
        let mut conntrack = Conntrack::default();
        let mut text_of = |path: &Path, errors: &mut Vec<ConntrackError>| match read_text(path) {
            Ok(Some(text)) => {
                present = true;
                Some(text)
            }
            Ok(None) => None,
            Err(source) => {
                present = true;
                errors.push(ConntrackError::Read {
                    path: path.display().to_string(),
                    source,
                });
                None
            }
        };
        if let Some(text) = text_of(&self.stat, &mut errors) {
            match parse_stat(&text) {
                Ok(stat) => conntrack.stat = stat,
                Err(source) => errors.push(ConntrackError::Parse {
                    path: self.stat.display().to_string(),
                    source,
                }),
            }
        }
        for (name, slot) in [
            ("nf_conntrack_count", &mut conntrack.entries),
            ("nf_conntrack_max", &mut conntrack.entries_limit),
        ] {
            let path = self.sysctl_dir.join(name);
            if let Some(text) = text_of(&path, &mut errors) {
                match parse_value(&text) {
                    Ok(value) => *slot = Some(value),
                    Err(source) => errors.push(ConntrackError::Parse {
                        path: path.display().to_string(),
                        source,
                    }),
                }
            }
        }
        (present.then_some(conntrack), errors)
    }
}

/// The file's text; `None` when it does not exist.
fn read_text(path: &Path) -> std::io::Result<Option<String>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut text = String::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    Ok(Some(text))
}

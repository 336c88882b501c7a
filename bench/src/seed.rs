//! The seed's collection step: `parse_ip_stats.sh` (`ip -s link | awk`),
//! which Telegraf ran every 30 s. It is taken out of the seed document at
//! run time (never stored in this repository) and timed as `bash
//! parse_ip_stats.sh` inside the benchmark namespace.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sys::Netns;

/// The script as the DaemonSet wrote it: the ConfigMap key's block scalar
/// inside the document's `cat <<EOF` heredoc, de-indented, with the
/// heredoc's backslash escapes undone.
pub fn extract_script(document: &str) -> Result<String> {
    let mut lines = document.lines();
    lines
        .by_ref()
        .find(|l| l.trim() == "parse_ip_stats.sh: |")
        .context("no `parse_ip_stats.sh: |` block in the seed document")?;
    let mut block: Vec<&str> = Vec::new();
    let mut indent: Option<usize> = None;
    for line in lines {
        if line.trim().is_empty() {
            block.push("");
            continue;
        }
        let leading = line.len() - line.trim_start_matches(' ').len();
        let want = *indent.get_or_insert(leading);
        if leading < want || want == 0 {
            break;
        }
        block.push(&line[want..]);
    }
    while block.last() == Some(&"") {
        block.pop();
    }
    if block.first().map(|l| l.starts_with("#!")) != Some(true) {
        bail!("the parse_ip_stats.sh block does not start with a #! line");
    }
    let mut script = undo_heredoc_escapes(&block.join("\n"));
    script.push('\n');
    Ok(script)
}

/// In an unquoted heredoc a backslash escapes `$`, `` ` ``, `\` and a
/// newline; every other backslash stays.
fn undo_heredoc_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('$') | Some('`') | Some('\\') => {
                    out.push(chars.next().expect("peeked"));
                    continue;
                }
                Some('\n') => {
                    chars.next();
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

pub struct ScriptRun {
    pub elapsed: Duration,
    /// user + system CPU of bash and every child it waited for (ip, awk, date).
    pub cpu: Duration,
    pub lines: usize,
}

/// Runs `bash script` in `netns` (setns before exec: `ip -s link` reads the
/// namespace over netlink, nothing else is needed) and waits for it.
pub fn run_once(netns: &Netns, script: &Path) -> Result<ScriptRun> {
    let fd = netns.raw_fd();
    let mut command = Command::new("bash");
    command
        .arg(script)
        .env("HOSTNAME", "bench-node")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setns is async-signal-safe; fd stays open for the call.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = command.spawn().context("starting bash")?;
    let mut output = Vec::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_end(&mut output)?;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; std never waits for it after this.
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    if rc < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("parse_ip_stats.sh failed (wait status {status})");
    }
    let timeval = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(ScriptRun {
        elapsed,
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        lines: output.iter().filter(|&&b| b == b'\n').count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = "intro\n```bash\ncat <<EOF> x.yaml\ndata:\n  conf: |\n    a = 1\n  parse_ip_stats.sh: |\n    #!/bin/bash\n    ts=\\$(date +%s%N)\n\n    ip -s link | awk -v ts=\"\\$ts\" '\n      { printf \"%s\\n\", \\$1 }\n    '\n\n---\nkind: DaemonSet\nEOF\n```\n";

    #[test]
    fn extracts_and_unescapes_the_block() {
        let script = extract_script(DOCUMENT).unwrap();
        assert_eq!(
            script,
            "#!/bin/bash\nts=$(date +%s%N)\n\nip -s link | awk -v ts=\"$ts\" '\n  { printf \"%s\\n\", $1 }\n'\n"
        );
    }

    #[test]
    fn heredoc_escapes() {
        assert_eq!(undo_heredoc_escapes(r"a\$b\\c\`d\n"), r"a$b\c`d\n");
        assert_eq!(undo_heredoc_escapes("x\\\ny"), "xy");
    }

    #[test]
    fn missing_block_is_an_error() {
        assert!(extract_script("nothing here").is_err());
    }
}

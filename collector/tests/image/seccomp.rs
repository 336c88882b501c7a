//! The seccomp profiles of the runtimes the DaemonSet may meet.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{env, MOBY_PROFILE_ENV};

/// Seccomp profiles of the runtimes the DaemonSet may meet, as files.
pub enum Profile {
    /// containerd >= 1.7 and Docker >= 23: moby's profile with `bpf` allowed
    /// with CAP_BPF and `perf_event_open` with CAP_PERFMON.
    RuntimeDefault,
    /// Docker 20.10's profile as Debian 12 ships it: both only with
    /// CAP_SYS_ADMIN.
    Docker2010,
    /// Debian 12's containers-common 0.50 (podman's and CRI-O's default):
    /// both only with CAP_SYS_ADMIN, and EPERM explicitly otherwise.
    ContainersCommon,
}

fn rules_allowing<'a>(profile: &'a Value, syscall: &str) -> Vec<&'a Value> {
    profile["syscalls"]
        .as_array()
        .expect("profile has syscalls")
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
        .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == syscall))
        .collect()
}

fn allowed_with(profile: &Value, syscall: &str, capability: &str) -> bool {
    rules_allowing(profile, syscall).iter().any(|r| {
        r["includes"]["caps"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == capability))
    })
}

impl Profile {
    /// The profile file (kept in `dir`) for `--security-opt seccomp=`.
    pub fn file(&self, dir: &Path) -> PathBuf {
        match self {
            Profile::ContainersCommon => {
                let path = PathBuf::from("/usr/share/containers/seccomp.json");
                let profile: Value = serde_json::from_slice(
                    &std::fs::read(&path).expect("containers-common's profile"),
                )
                .unwrap();
                assert!(
                    !allowed_with(&profile, "bpf", "CAP_BPF"),
                    "{}: bpf allowed with CAP_BPF now",
                    path.display()
                );
                path
            }
            Profile::Docker2010 | Profile::RuntimeDefault => {
                let moby = PathBuf::from(env(MOBY_PROFILE_ENV));
                let mut profile: Value =
                    serde_json::from_slice(&std::fs::read(&moby).expect("moby's profile")).unwrap();
                // The premise of both cases: 20.10 allows neither with the
                // new capabilities, only with CAP_SYS_ADMIN.
                for syscall in ["bpf", "perf_event_open"] {
                    assert!(allowed_with(&profile, syscall, "CAP_SYS_ADMIN"));
                    assert!(!allowed_with(&profile, syscall, "CAP_BPF"));
                    assert!(!allowed_with(&profile, syscall, "CAP_PERFMON"));
                }
                if let Profile::Docker2010 = self {
                    return moby;
                }
                // The two rules moby's profiles/seccomp/default.json gained
                // in 23.0 (moby PR 43987; containerd's generated default
                // the same in 1.7, PR 7301), as they are written there. There
                // is no ERRNO rule for either, which would win over them.
                let rules = profile["syscalls"].as_array_mut().unwrap();
                for (syscall, capability) in
                    [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")]
                {
                    rules.push(serde_json::json!({
                        "names": [syscall],
                        "action": "SCMP_ACT_ALLOW",
                        "includes": { "caps": [capability] }
                    }));
                }
                let path = dir.join("runtime-default.json");
                std::fs::write(&path, serde_json::to_vec_pretty(&profile).unwrap()).unwrap();
                path
            }
        }
    }
}

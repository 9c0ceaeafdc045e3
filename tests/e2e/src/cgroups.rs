//! Real cgroups for callers, so the daemon knows them as distinct apps.

use std::{path::PathBuf, process::Command};

/// A cgroup v2 tree the test makes and removes.
pub struct Cgroups {
    root: PathBuf,
}

impl Cgroups {
    /// Makes `paths` (cgroup paths such as `/system.slice/x.service`) under a tree named after
    /// `test` and this process.
    pub fn make(test: &str, paths: &[&str]) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (before, after) = l.split_once(" - ")?;
                (after.split_whitespace().next()? == "cgroup2")
                    .then(|| before.split_whitespace().nth(4).map(PathBuf::from))?
            })
            .expect("cgroup v2 is mounted");
        let root = mount.join(format!("aiesim-{test}-{}", std::process::id()));
        for p in paths {
            std::fs::create_dir_all(root.join(p.trim_start_matches('/'))).unwrap();
        }
        Self { root }
    }

    /// `path` as `/proc/PID/cgroup` names it: from the hierarchy's root.
    pub fn path(&self, path: &str) -> String {
        let tree = self.root.file_name().unwrap_or_default().to_string_lossy();
        format!("/{tree}/{}", path.trim_start_matches('/'))
    }

    /// The `cgroup.procs` file of `path`: a process that writes its pid there moves in.
    pub fn procs(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/')).join("cgroup.procs")
    }

    /// A command that moves into the cgroup `path`, then runs `program` as `uid` with the
    /// supplementary group `gid` (an app's user in aiesim-apps): the daemon knows it by that
    /// cgroup's unit.
    pub fn command_as(&self, path: &str, uid: u32, gid: u32, program: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec setpriv --reuid={uid} --regid={uid} --groups={gid} -- \"$0\" \"$@\"",
                self.procs(path).display()
            ))
            .arg(program);
        c
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Leaves first; the callers have exited, so every cgroup is empty.
        let mut dirs = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

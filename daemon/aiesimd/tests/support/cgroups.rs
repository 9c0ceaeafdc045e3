//! A cgroup v2 tree a test makes under the hierarchy's root and removes, even when it fails.

#![allow(dead_code, reason = "each test uses its own part")]

use std::path::PathBuf;

pub struct CgroupTree {
    pub root: PathBuf,
}

impl CgroupTree {
    /// Makes `paths` under a tree named after `test` and this process.
    pub fn make(test: &str, paths: &[&str]) -> Self {
        // `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid system.
        let mount = aiesimd::identity::cgroup2_root().expect("cgroup v2 is mounted");
        let root = mount.join(format!("aiesim-{test}-{}", std::process::id()));
        for path in paths {
            std::fs::create_dir_all(root.join(path)).expect("make a cgroup");
        }
        Self { root }
    }

    pub fn dir(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// The `cgroup.procs` file of `path`: a process that writes its pid there moves in.
    pub fn procs(&self, path: &str) -> PathBuf {
        self.dir(path).join("cgroup.procs")
    }

    /// The cgroup id of `path`: its directory's inode.
    pub fn id(&self, path: &str) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(self.dir(path)).expect("the cgroup exists"))
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        // Deepest first; the processes in them have exited.
        let mut dirs = vec![self.root.clone()];
        let mut i = 0;
        while i < dirs.len() {
            let children: Vec<_> = std::fs::read_dir(&dirs[i])
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            dirs.extend(children);
            i += 1;
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

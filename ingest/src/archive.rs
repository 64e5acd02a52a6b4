//! The archive on a filesystem: layout, atomic writes, and the commit protocol.
//!
//! ```text
//! OUT/dt=2022-02-14/region=38/cdrs-p003-000000001200-000000004711.parquet   data
//! OUT/_cdrflow/pending/cdrs/p003/000000001200-000000004711.json            intent
//! OUT/_cdrflow/commits/cdrs/p003/000000001200-000000004711.json            commit
//! ```
//!
//! A **unit** is the work of one Kafka partition between two rotations: offsets
//! `[first, last]`, written as one Parquet file per (`dt`, `region`) it touches. Every file
//! is written to a temporary name, fsynced and renamed, so no reader ever sees a partial
//! file. A unit is made visible in three steps:
//!
//! 1. write the **intent** (the list of files the unit will write);
//! 2. write the data files;
//! 3. write the **commit** marker (same content), then remove the intent.
//!
//! On start-up and on every partition assignment, [`Archive::recover`] removes the files of
//! every intent that has no commit (a crash between 1 and 3) and the worker resumes at the
//! highest committed `last + 1`. So a SIGKILL at any moment loses nothing (uncommitted
//! offsets are read again) and duplicates nothing (their files are removed first). The
//! commit markers are the archive's manifest: `cdrflow reconcile` reads them.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One written file of a unit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnitFile {
    /// Path relative to the archive root.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
}

/// The manifest of a unit (the intent's and the commit's content).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnitManifest {
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// First offset covered.
    pub first_offset: i64,
    /// Last offset covered.
    pub last_offset: i64,
    /// Valid rows written.
    pub rows: u64,
    /// Messages rejected (sent to the dead-letter topic).
    pub rejected: u64,
    /// The files.
    pub files: Vec<UnitFile>,
}

/// An archive rooted at a local directory.
#[derive(Debug, Clone)]
pub struct Archive {
    root: PathBuf,
}

fn range_name(first: i64, last: i64) -> String {
    format!("{first:012}-{last:012}")
}

impl Archive {
    /// The archive at `root` (created if missing).
    pub fn open(root: &Path) -> Result<Archive> {
        fs::create_dir_all(root).with_context(|| format!("creating the archive directory {}", root.display()))?;
        Ok(Archive { root: root.to_owned() })
    }

    /// The archive's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn marker_dir(&self, kind: &str, topic: &str, partition: i32) -> PathBuf {
        self.root.join("_cdrflow").join(kind).join(topic).join(format!("p{partition:03}"))
    }

    /// Where a unit's file for one (`dt`, `region`) goes, relative to the root.
    pub fn data_path(topic: &str, partition: i32, first: i64, last: i64, dt: &str, region: u8) -> String {
        format!("dt={dt}/region={region:02}/{topic}-p{partition:03}-{}.parquet", range_name(first, last))
    }

    /// Writes many files, each atomically, and makes them durable together: all are written
    /// under temporary names, the filesystem is synced once (`syncfs`), all are renamed
    /// into place, and it is synced again. Two syncs per unit instead of two per file: a
    /// unit may write a file for every (`dt`, `region`) it touches.
    pub fn put_all_atomic(&self, files: &[(String, Vec<u8>)]) -> Result<()> {
        let mut staged = Vec::with_capacity(files.len());
        let result = (|| -> Result<()> {
            for (rel, bytes) in files {
                let path = self.root.join(rel);
                let dir = path.parent().expect("archive paths have a directory");
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                let tmp = dir.join(format!(".{}.tmp", path.file_name().expect("file name").to_string_lossy()));
                staged.push((tmp.clone(), path.clone()));
                let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
                f.write_all(bytes).with_context(|| format!("writing {} (is the disk full?)", tmp.display()))?;
            }
            self.sync_filesystem()?;
            for (tmp, path) in &staged {
                fs::rename(tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
            }
            self.sync_filesystem()
        })();
        if result.is_err() {
            for (tmp, _) in &staged {
                let _ = fs::remove_file(tmp);
            }
        }
        result
    }

    /// Flushes every written byte and rename of the archive's filesystem to disk.
    fn sync_filesystem(&self) -> Result<()> {
        use std::os::fd::AsRawFd;
        let root = File::open(&self.root).with_context(|| format!("opening {}", self.root.display()))?;
        // SAFETY: syncfs takes any open descriptor on the filesystem; `root` outlives the call.
        if unsafe { libc::syncfs(root.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("syncing the filesystem of {}", self.root.display()));
        }
        Ok(())
    }

    /// Writes `bytes` at `rel` atomically: temporary name, fsync, rename, fsync the directory.
    pub fn put_atomic(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let path = self.root.join(rel);
        let dir = path.parent().expect("archive paths have a directory");
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".{}.tmp", path.file_name().expect("file name").to_string_lossy()));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            anyhow::Error::new(e).context(format!("writing {} (is the disk full or read-only?)", path.display()))
        })
    }

    fn write_marker(&self, kind: &str, m: &UnitManifest) -> Result<()> {
        let rel = self
            .marker_dir(kind, &m.topic, m.partition)
            .join(format!("{}.json", range_name(m.first_offset, m.last_offset)));
        let rel = rel.strip_prefix(&self.root).expect("under the root").to_string_lossy().into_owned();
        self.put_atomic(&rel, &serde_json::to_vec(m)?)
    }

    /// Step 1: records the files a unit is about to write.
    pub fn begin(&self, m: &UnitManifest) -> Result<()> {
        self.write_marker("pending", m)
    }

    /// Step 3: commits a unit whose files are all written.
    pub fn commit(&self, m: &UnitManifest) -> Result<()> {
        self.write_marker("commits", m)?;
        let pending = self
            .marker_dir("pending", &m.topic, m.partition)
            .join(format!("{}.json", range_name(m.first_offset, m.last_offset)));
        let _ = fs::remove_file(pending);
        Ok(())
    }

    fn read_markers(&self, kind: &str, topic: &str, partition: i32) -> Result<Vec<UnitManifest>> {
        let dir = self.marker_dir(kind, topic, partition);
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|x| x == "json") {
                let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                out.push(
                    serde_json::from_slice(&bytes)
                        .with_context(|| format!("{} is not a unit manifest", path.display()))?,
                );
            }
        }
        Ok(out)
    }

    /// Every committed unit of a partition, in offset order.
    pub fn committed(&self, topic: &str, partition: i32) -> Result<Vec<UnitManifest>> {
        let mut m = self.read_markers("commits", topic, partition)?;
        m.sort_by_key(|u| u.first_offset);
        Ok(m)
    }

    /// Removes what uncommitted units left behind; returns the next offset to read (absent
    /// if nothing was ever committed).
    pub fn recover(&self, topic: &str, partition: i32) -> Result<Option<i64>> {
        let committed = self.committed(topic, partition)?;
        let done: std::collections::HashSet<(i64, i64)> =
            committed.iter().map(|u| (u.first_offset, u.last_offset)).collect();
        for intent in self.read_markers("pending", topic, partition)? {
            if !done.contains(&(intent.first_offset, intent.last_offset)) {
                for f in &intent.files {
                    match fs::remove_file(self.root.join(&f.path)) {
                        Ok(()) => tracing::warn!(file = f.path, "removed a file of an uncommitted unit"),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e).with_context(|| format!("removing {}", f.path)),
                    }
                }
            }
            let p = self
                .marker_dir("pending", topic, partition)
                .join(format!("{}.json", range_name(intent.first_offset, intent.last_offset)));
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        Ok(committed.iter().map(|u| u.last_offset + 1).max())
    }

    /// Next offsets per partition from the commit markers alone, without recovering: for
    /// readers (progress, reconcile) while a worker may be writing. Only the partition's
    /// owner may [`Archive::recover`].
    pub fn committed_positions(&self, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>> {
        let mut out = HashMap::new();
        for &p in partitions {
            if let Some(next) = self.committed(topic, p)?.iter().map(|u| u.last_offset + 1).max() {
                out.insert(p, next);
            }
        }
        Ok(out)
    }

    /// Next offsets for these partitions, recovering each first: for the partition's owner,
    /// on assignment.
    pub fn positions(&self, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>> {
        let mut out = HashMap::new();
        for &p in partitions {
            if let Some(next) = self.recover(topic, p)? {
                out.insert(p, next);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(first: i64, last: i64, files: &[&str]) -> UnitManifest {
        UnitManifest {
            topic: "cdrs".into(),
            partition: 3,
            first_offset: first,
            last_offset: last,
            rows: files.len() as u64,
            rejected: 0,
            files: files.iter().map(|f| UnitFile { path: f.to_string(), rows: 1 }).collect(),
        }
    }

    #[test]
    fn uncommitted_units_are_removed_and_positions_come_from_commits() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open(dir.path()).unwrap();
        assert_eq!(a.recover("cdrs", 3).unwrap(), None);
        // A committed unit.
        let one = manifest(0, 99, &["dt=2022-02-01/region=38/cdrs-p003-000000000000-000000000099.parquet"]);
        a.begin(&one).unwrap();
        a.put_atomic(&one.files[0].path, b"x").unwrap();
        a.commit(&one).unwrap();
        // A unit interrupted after one of its two files.
        let two = manifest(
            100,
            150,
            &[
                "dt=2022-02-01/region=38/cdrs-p003-000000000100-000000000150.parquet",
                "dt=2022-02-01/region=77/cdrs-p003-000000000100-000000000150.parquet",
            ],
        );
        a.begin(&two).unwrap();
        a.put_atomic(&two.files[0].path, b"y").unwrap();
        assert_eq!(a.recover("cdrs", 3).unwrap(), Some(100));
        assert!(dir.path().join(&one.files[0].path).exists());
        assert!(!dir.path().join(&two.files[0].path).exists(), "the interrupted unit's file is gone");
        assert!(a.read_markers("pending", "cdrs", 3).unwrap().is_empty());
        // No temporary files are left visible.
        let leftovers: Vec<_> =
            walk(dir.path()).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
        assert!(leftovers.is_empty());
    }

    fn walk(p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() { out.extend(walk(&e)) } else { out.push(e) }
        }
        out
    }
}

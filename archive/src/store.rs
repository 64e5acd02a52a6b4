//! The archive: layout, atomic writes, and the commit protocol, on a local filesystem or
//! in object storage (`s3://bucket/prefix`, through the `object_store` crate).
//!
//! ```text
//! OUT/dt=2022-02-14/region=38/cdrs-p003-000000001200-000000004711.parquet   data
//! OUT/_cdrflow/pending/cdrs/p003/000000001200-000000004711.json            intent
//! OUT/_cdrflow/commits/cdrs/p003/000000001200-000000004711.json            commit
//! ```
//!
//! A **unit** is the work of one Kafka partition between two rotations: offsets
//! `[first, last]`, written as one Parquet file per (`dt`, `region`) it touches. No reader
//! ever sees a partial file: on a filesystem every file is written to a hidden temporary
//! name, synced and renamed; in object storage every file is one PUT, which the store makes
//! visible whole or not at all. A unit is made visible in three steps:
//!
//! 1. write the **intent** (the list of files the unit will write);
//! 2. write the data files;
//! 3. write the **commit** marker (same content), then remove the intent.
//!
//! On start-up and on every partition assignment, [`Archive::recover`] removes the files of
//! every intent that has no commit (a crash between 1 and 3) and the worker resumes at the
//! highest committed `last + 1`. So a SIGKILL at any moment loses nothing (uncommitted
//! offsets are read again) and duplicates nothing (their files are removed first). The
//! commit markers are the archive's manifest: `cdrflow reconcile` reads them, and a reader
//! that must never count a file of an interrupted unit reads only the files they list.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
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

/// An archive: a local directory or an object-storage prefix.
#[derive(Debug, Clone)]
pub struct Archive {
    backend: Arc<Backend>,
}

#[derive(Debug)]
enum Backend {
    /// A directory on a local (or mounted) filesystem.
    Local { root: PathBuf },
    /// A prefix in object storage.
    Object {
        /// The store (one bucket).
        store: Arc<dyn ObjectStore>,
        /// The archive's prefix in it.
        prefix: String,
        /// The location as the user gave it, for logs and errors.
        url: String,
        /// Drives the store's requests for the worker's synchronous loop.
        runtime: tokio::runtime::Runtime,
    },
}

/// Where an archive is, parsed without touching it.
enum Location<'a> {
    S3 { bucket: &'a str, prefix: &'a str },
    Dir(PathBuf),
}

impl<'a> Location<'a> {
    fn parse(location: &'a str) -> Result<Location<'a>> {
        if location.trim().is_empty() {
            bail!("the archive location is empty: give a directory or s3://BUCKET/PREFIX");
        }
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("{location}: no bucket; write s3://BUCKET/PREFIX");
            }
            return Ok(Location::S3 { bucket, prefix });
        }
        if let Some((scheme, _)) = location.split_once("://") {
            bail!("{location}: {scheme}:// is not supported; use a local directory or s3://BUCKET/PREFIX");
        }
        Ok(Location::Dir(PathBuf::from(location)))
    }
}

fn range_name(first: i64, last: i64) -> String {
    format!("{first:012}-{last:012}")
}

fn marker_dir(kind: &str, topic: &str, partition: i32) -> String {
    format!("_cdrflow/{kind}/{topic}/p{partition:03}")
}

fn marker_path(kind: &str, topic: &str, partition: i32, first: i64, last: i64) -> String {
    format!("{}/{}.json", marker_dir(kind, topic, partition), range_name(first, last))
}

impl Archive {
    /// The archive at `location` for a writer: `s3://bucket/prefix` (credentials, region
    /// and endpoint from the usual `AWS_*` environment variables, never flags) or a local
    /// directory (created if missing).
    pub fn open(location: &str) -> Result<Archive> {
        match Location::parse(location)? {
            Location::S3 { bucket, prefix } => Archive::open_s3(location, bucket, prefix),
            Location::Dir(root) => Archive::open_dir(&root),
        }
    }

    /// The archive at `location` for a reader (`backfill`, `reconcile`): a local directory
    /// must exist (a mistyped path is an error, not an empty archive); an object-storage
    /// prefix is checked by what it lists.
    pub fn open_existing(location: &str) -> Result<Archive> {
        match Location::parse(location)? {
            Location::S3 { bucket, prefix } => Archive::open_s3(location, bucket, prefix),
            Location::Dir(root) => {
                if !root.is_dir() {
                    bail!(
                        "no archive at {}: {}; give the directory the ingest workers write (their --out), or s3://BUCKET/PREFIX",
                        root.display(),
                        if root.exists() { "it is not a directory" } else { "no such directory" }
                    );
                }
                Ok(Archive { backend: Arc::new(Backend::Local { root }) })
            }
        }
    }

    /// Checks `location` and says where it is, touching nothing (for `--dry-run`).
    pub fn describe_location(location: &str) -> Result<String> {
        Ok(match Location::parse(location)? {
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix} (object storage)"),
            Location::Dir(root) => format!(
                "{} ({})",
                root.display(),
                if root.is_dir() { "an existing directory" } else { "created when the worker starts" }
            ),
        })
    }

    fn open_s3(location: &str, bucket: &str, prefix: &str) -> Result<Archive> {
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            // Give up on a request within ~30 s: the worker then pauses its partitions
            // and retries the whole unit with its own backoff, staying responsive to
            // rebalances and SIGTERM meanwhile.
            .with_retry(object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..Default::default()
            })
            .build()
            .with_context(|| {
                format!("configuring object storage for {location} (set AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; AWS_ENDPOINT and AWS_ALLOW_HTTP=true for S3-compatible stores)")
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Archive {
            backend: Arc::new(Backend::Object {
                store: Arc::new(store),
                prefix: prefix.trim_matches('/').to_owned(),
                url: location.to_owned(),
                runtime,
            }),
        })
    }

    /// The archive in a local directory (created if missing).
    pub fn open_dir(root: &Path) -> Result<Archive> {
        fs::create_dir_all(root).with_context(|| format!("creating the archive directory {}", root.display()))?;
        Ok(Archive { backend: Arc::new(Backend::Local { root: root.to_owned() }) })
    }

    /// The topics with committed units, sorted.
    pub fn topics(&self) -> Result<Vec<String>> {
        let mut names = self.list_dirs("_cdrflow/commits")?;
        names.sort();
        Ok(names)
    }

    /// The names of the directories directly under `rel` (none if it does not exist).
    fn list_dirs(&self, rel: &str) -> Result<Vec<String>> {
        Ok(match &*self.backend {
            Backend::Local { root } => match fs::read_dir(root.join(rel)) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e).with_context(|| format!("listing {}", root.join(rel).display())),
            },
            Backend::Object { store, runtime, .. } => runtime
                .block_on(store.list_with_delimiter(Some(&self.object_path(rel)?)))
                .map_err(|e| self.store_error(e, &format!("listing {rel}")))?
                .common_prefixes
                .into_iter()
                .filter_map(|p| p.filename().map(str::to_owned))
                .collect(),
        })
    }

    /// Where the archive is, for logs and errors.
    pub fn describe(&self) -> String {
        match &*self.backend {
            Backend::Local { root } => root.display().to_string(),
            Backend::Object { url, .. } => url.clone(),
        }
    }

    /// Where a unit's file for one (`dt`, `region`) goes, relative to the root.
    pub fn data_path(topic: &str, partition: i32, first: i64, last: i64, dt: &str, region: u8) -> String {
        format!("dt={dt}/region={region:02}/{topic}-p{partition:03}-{}.parquet", range_name(first, last))
    }

    /// Writes many files, each atomically, and makes them durable together.
    ///
    /// On a filesystem all are written under temporary names, the filesystem is synced once
    /// (`syncfs`), all are renamed into place, and it is synced again: two syncs per unit
    /// instead of two per file, as a unit may write a file for every (`dt`, `region`) it
    /// touches. In object storage each file is one PUT, all of them in flight at once.
    pub fn put_all_atomic(&self, files: &[(String, Vec<u8>)]) -> Result<()> {
        match &*self.backend {
            Backend::Local { root } => put_all_local(root, files),
            Backend::Object { store, runtime, .. } => runtime.block_on(async {
                let mut puts = tokio::task::JoinSet::new();
                for (rel, bytes) in files {
                    let (store, path, bytes) = (store.clone(), self.object_path(rel)?, bytes.clone());
                    puts.spawn(async move { store.put(&path, PutPayload::from(bytes)).await.map(|_| ()) });
                }
                while let Some(put) = puts.join_next().await {
                    put.context("an upload task failed")?.map_err(|e| self.store_error(e, "writing a file"))?;
                }
                Ok(())
            }),
        }
    }

    /// Writes `bytes` at `rel` atomically (temporary name, fsync, rename, fsync the
    /// directory; or one PUT).
    pub fn put_atomic(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        match &*self.backend {
            Backend::Local { root } => put_local(root, rel, bytes),
            Backend::Object { store, runtime, .. } => runtime
                .block_on(store.put(&self.object_path(rel)?, PutPayload::from(bytes.to_vec())))
                .map(|_| ())
                .map_err(|e| self.store_error(e, &format!("writing {rel}"))),
        }
    }

    /// Reads the file at `rel`.
    pub fn get(&self, rel: &str) -> Result<Vec<u8>> {
        match &*self.backend {
            Backend::Local { root } => {
                fs::read(root.join(rel)).with_context(|| format!("reading {}", root.join(rel).display()))
            }
            Backend::Object { store, runtime, .. } => runtime
                .block_on(async { store.get(&self.object_path(rel)?).await?.bytes().await.map_err(Into::into) })
                .map(|b| b.to_vec())
                .map_err(|e: anyhow::Error| e.context(format!("reading {rel} from {}", self.describe()))),
        }
    }

    /// Removes the file at `rel`; `false` if there was none.
    pub fn remove(&self, rel: &str) -> Result<bool> {
        match &*self.backend {
            Backend::Local { root } => match fs::remove_file(root.join(rel)) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e).with_context(|| format!("removing {}", root.join(rel).display())),
            },
            Backend::Object { store, runtime, .. } => {
                let path = self.object_path(rel)?;
                let existed = match runtime.block_on(store.head(&path)) {
                    Ok(_) => true,
                    Err(object_store::Error::NotFound { .. }) => false,
                    Err(e) => return Err(self.store_error(e, &format!("looking up {rel}"))),
                };
                if existed {
                    runtime
                        .block_on(store.delete(&path))
                        .map_err(|e| self.store_error(e, &format!("removing {rel}")))?;
                }
                Ok(existed)
            }
        }
    }

    /// The contents of every `.json` file directly under the directory `rel`.
    fn read_json_files(&self, rel: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        match &*self.backend {
            Backend::Local { root } => {
                let dir = root.join(rel);
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
                };
                for entry in entries {
                    let path = entry?.path();
                    if path.extension().is_some_and(|x| x == "json") {
                        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                        out.push((path.display().to_string(), bytes));
                    }
                }
            }
            Backend::Object { store, runtime, .. } => {
                let dir = self.object_path(rel)?;
                let listed = runtime
                    .block_on(store.list_with_delimiter(Some(&dir)))
                    .map_err(|e| self.store_error(e, &format!("listing {rel}")))?;
                for meta in listed.objects {
                    if meta.location.extension() == Some("json") {
                        let bytes = runtime
                            .block_on(async { store.get(&meta.location).await?.bytes().await })
                            .map_err(|e| self.store_error(e, &format!("reading {}", meta.location)))?;
                        out.push((meta.location.to_string(), bytes.to_vec()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The partitions of `topic` with committed units, in order.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        let names = self.list_dirs(&format!("_cdrflow/commits/{topic}"))?;
        let mut out: Vec<i32> = names.iter().filter_map(|n| n.strip_prefix('p')?.parse().ok()).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Every data file in the archive (relative paths, sorted), committed or not: for
    /// readers that compare the archive with its manifest.
    pub fn data_files(&self) -> Result<Vec<String>> {
        let mut out = match &*self.backend {
            Backend::Local { root } => {
                let mut out = Vec::new();
                let mut dirs = vec![root.clone()];
                while let Some(dir) = dirs.pop() {
                    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
                        let path = entry?.path();
                        if path.is_dir() {
                            dirs.push(path);
                        } else if path.extension().is_some_and(|x| x == "parquet") {
                            out.push(path.strip_prefix(root).expect("under the root").to_string_lossy().into_owned());
                        }
                    }
                }
                out
            }
            Backend::Object { store, runtime, prefix, .. } => {
                use futures::TryStreamExt;
                let base = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
                let listed: Vec<_> = runtime
                    .block_on(store.list(base.as_ref()).try_collect())
                    .map_err(|e| self.store_error(e, "listing the archive"))?;
                let skip = if prefix.is_empty() { 0 } else { prefix.len() + 1 };
                listed
                    .into_iter()
                    .filter(|m| m.location.extension() == Some("parquet"))
                    .map(|m| m.location.as_ref()[skip..].to_owned())
                    .collect()
            }
        };
        out.sort();
        Ok(out)
    }

    fn object_path(&self, rel: &str) -> Result<ObjectPath> {
        let Backend::Object { prefix, .. } = &*self.backend else { unreachable!("object paths are for object stores") };
        let full = if prefix.is_empty() { rel.to_owned() } else { format!("{prefix}/{rel}") };
        ObjectPath::parse(&full).with_context(|| format!("{full} is not a valid object path"))
    }

    fn store_error(&self, e: impl Into<anyhow::Error>, doing: &str) -> anyhow::Error {
        e.into().context(format!("{doing} in {} (is the store reachable and the bucket there?)", self.describe()))
    }

    fn write_marker(&self, kind: &str, m: &UnitManifest) -> Result<()> {
        let rel = marker_path(kind, &m.topic, m.partition, m.first_offset, m.last_offset);
        self.put_atomic(&rel, &serde_json::to_vec(m)?)
    }

    /// Step 1: records the files a unit is about to write.
    pub fn begin(&self, m: &UnitManifest) -> Result<()> {
        self.write_marker("pending", m)
    }

    /// Step 3: commits a unit whose files are all written.
    pub fn commit(&self, m: &UnitManifest) -> Result<()> {
        self.write_marker("commits", m)?;
        // A leftover intent of a committed unit is harmless: recovery removes it.
        let _ = self.remove(&marker_path("pending", &m.topic, m.partition, m.first_offset, m.last_offset));
        Ok(())
    }

    fn read_markers(&self, kind: &str, topic: &str, partition: i32) -> Result<Vec<UnitManifest>> {
        self.read_json_files(&marker_dir(kind, topic, partition))?
            .into_iter()
            .map(|(name, bytes)| {
                serde_json::from_slice(&bytes).with_context(|| format!("{name} is not a unit manifest"))
            })
            .collect()
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
                    if self.remove(&f.path)? {
                        tracing::warn!(file = f.path, "removed a file of an uncommitted unit");
                    }
                    // A writer killed before its renames leaves the file under its
                    // temporary name.
                    if matches!(&*self.backend, Backend::Local { .. }) {
                        self.remove_temporary(&temporary(Path::new(&f.path)).to_string_lossy())?;
                    }
                }
            }
            self.remove(&marker_path("pending", topic, partition, intent.first_offset, intent.last_offset))?;
        }
        // And a marker written when the writer was killed, under its temporary name.
        if let Backend::Local { root } = &*self.backend {
            for kind in ["pending", "commits"] {
                let dir = marker_dir(kind, topic, partition);
                let Ok(entries) = fs::read_dir(root.join(&dir)) else { continue };
                for e in entries.flatten() {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with('.') && name.ends_with(".tmp") {
                        self.remove_temporary(&format!("{dir}/{name}"))?;
                    }
                }
            }
        }
        Ok(committed.iter().map(|u| u.last_offset + 1).max())
    }

    /// Removes a file a killed writer left under its temporary name, if it is there.
    fn remove_temporary(&self, rel: &str) -> Result<()> {
        if self.remove(rel)? {
            tracing::warn!(file = rel, "removed a file left under its temporary name by a killed writer");
        }
        Ok(())
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

/// [`Archive::put_all_atomic`] on a filesystem.
fn put_all_local(root: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let mut staged = Vec::with_capacity(files.len());
    let result = (|| -> Result<()> {
        for (rel, bytes) in files {
            let path = root.join(rel);
            let dir = path.parent().expect("archive paths have a directory");
            fs::create_dir_all(dir)
                .with_context(|| format!("creating {} (is the disk full or read-only?)", dir.display()))?;
            let tmp = temporary(&path);
            staged.push((tmp.clone(), path.clone()));
            let mut f = File::create(&tmp)
                .with_context(|| format!("creating {} (is the disk full or read-only?)", tmp.display()))?;
            f.write_all(bytes).with_context(|| format!("writing {} (is the disk full?)", tmp.display()))?;
        }
        sync_filesystem(root)?;
        for (tmp, path) in &staged {
            fs::rename(tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
        }
        sync_filesystem(root)
    })();
    if result.is_err() {
        for (tmp, _) in &staged {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

/// The name a file is written under on a filesystem until it is complete and renamed.
fn temporary(path: &Path) -> PathBuf {
    path.with_file_name(format!(".{}.tmp", path.file_name().expect("archive paths name a file").to_string_lossy()))
}

/// Flushes every written byte and rename of the filesystem holding `root` to disk.
fn sync_filesystem(root: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let dir = File::open(root).with_context(|| format!("opening {}", root.display()))?;
    // SAFETY: syncfs takes any open descriptor on the filesystem; `dir` outlives the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("syncing the filesystem of {} (is the disk full?)", root.display()));
    }
    Ok(())
}

/// [`Archive::put_atomic`] on a filesystem.
fn put_local(root: &Path, rel: &str, bytes: &[u8]) -> Result<()> {
    let path = root.join(rel);
    let dir = path.parent().expect("archive paths have a directory");
    let tmp = temporary(&path);
    let write = || -> std::io::Result<()> {
        fs::create_dir_all(dir)?;
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
        let a = Archive::open_dir(dir.path()).unwrap();
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
        // Killed before its second file's rename, and while writing a commit marker: both
        // left under their temporary names.
        let stray = [
            temporary(&dir.path().join(&two.files[1].path)),
            temporary(&dir.path().join(marker_path("commits", "cdrs", 3, 100, 150))),
        ];
        for t in &stray {
            fs::create_dir_all(t.parent().unwrap()).unwrap();
            fs::write(t, b"partial").unwrap();
        }
        assert_eq!(a.recover("cdrs", 3).unwrap(), Some(100));
        assert!(stray.iter().all(|t| !t.exists()), "temporaries of the interrupted unit are gone");
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

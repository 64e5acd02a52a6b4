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
//! Units written together ([`Archive::write_units`]: the units a worker encoded at once)
//! take each step together: every intent is durable before any data file is visible, and
//! every data file before any commit. A crash between two steps leaves each unit of the
//! batch at the same point of its own protocol, which recovery handles unit by unit as
//! below; what batching saves is the syncs (five per batch on a filesystem, against six per
//! unit written alone) and the round trips (three per batch in object storage).
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

/// A unit ready to be written: its manifest and its files' contents.
#[derive(Debug, Clone)]
pub struct EncodedUnit {
    /// What the intent and the commit marker say.
    pub manifest: UnitManifest,
    /// Each file's path (relative to the archive root, as in the manifest) and bytes.
    pub files: Vec<(String, Vec<u8>)>,
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
        // A mistyped URL (s3:/bucket, s3:bucket, s3//bucket) would otherwise be a relative
        // directory, and the archive would go to the worker's local disk.
        let scheme = location.split_once(':').map(|(s, _)| s).filter(|s| {
            s.len() > 1
                && s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        });
        if let Some(scheme) = scheme {
            bail!(
                "{location} looks like a URL ({scheme}:) but is not s3://BUCKET/PREFIX: write s3://BUCKET/PREFIX for object storage, or ./{location} for a local directory of that name"
            );
        }
        if location.get(..3).is_some_and(|head| head.eq_ignore_ascii_case("s3/")) {
            bail!(
                "{location} looks like a mistyped s3://BUCKET/PREFIX: write that, or ./{location} for a local directory named s3"
            );
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
            Location::Dir(root) if root.exists() && !root.is_dir() => {
                bail!("{} exists and is not a directory: the archive needs a directory of its own", root.display())
            }
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

    /// Writes units and commits them together: every intent, then every data file, then
    /// every commit marker (the module doc says why that order is safe under a crash). On a
    /// filesystem each step's files are written under temporary names and renamed, with one
    /// `syncfs` around each step; in object storage each step's PUTs are all in flight at
    /// once. A failure leaves no temporary file behind, and what was renamed or put already
    /// is either rewritten identically by a retry or removed by [`Archive::recover`].
    ///
    /// `may_go_on` is asked before each step (the intents, the data files, the commits; on a
    /// filesystem, before the intents are written and before the data files and the commits
    /// are renamed into place); an error stops the write there, uncommitted. An ingest worker
    /// passes its place in the consumer group (`cdrflow_kafka::Fence`): a write that
    /// outlived it must not commit over the partition's next owner.
    pub fn write_units(&self, units: &[EncodedUnit], may_go_on: &dyn Fn() -> Result<()>) -> Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        may_go_on()?;
        let markers = |kind| -> Result<Vec<(String, Vec<u8>)>> {
            units
                .iter()
                .map(|u| {
                    let m = &u.manifest;
                    Ok((
                        marker_path(kind, &m.topic, m.partition, m.first_offset, m.last_offset),
                        serde_json::to_vec(m)?,
                    ))
                })
                .collect()
        };
        let (intents, commits) = (markers("pending")?, markers("commits")?);
        let mut data = units.iter().flat_map(|u| u.files.iter());
        match &*self.backend {
            Backend::Local { root } => write_units_local(root, &intents, data, &commits, may_go_on)?,
            Backend::Object { store, runtime, .. } => {
                let payloads = |files: &mut dyn Iterator<Item = &(String, Vec<u8>)>| -> Result<Vec<_>> {
                    files.map(|(rel, bytes)| Ok((self.object_path(rel)?, PutPayload::from(bytes.clone())))).collect()
                };
                let steps = [payloads(&mut intents.iter())?, payloads(&mut data)?, payloads(&mut commits.iter())?];
                runtime.block_on(async {
                    for (i, step) in steps.into_iter().enumerate() {
                        if i > 0 {
                            may_go_on()?;
                        }
                        put_all(store, step).await.map_err(|e| self.store_error(e, "writing a file"))?;
                    }
                    anyhow::Ok(())
                })?
            }
        }
        // A leftover intent of a committed unit is harmless: recovery removes it.
        for (rel, _) in &intents {
            let _ = self.remove(rel);
        }
        Ok(())
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

/// PUTs every file at once; returns when all are written or one failed.
async fn put_all(store: &Arc<dyn ObjectStore>, files: Vec<(ObjectPath, PutPayload)>) -> Result<()> {
    let mut puts = tokio::task::JoinSet::new();
    for (path, payload) in files {
        let store = store.clone();
        puts.spawn(async move { store.put(&path, payload).await.map(|_| ()) });
    }
    while let Some(put) = puts.join_next().await {
        put.context("an upload task failed")??;
    }
    Ok(())
}

/// [`Archive::write_units`] on a filesystem: the markers' temporaries, then five syncs.
///
/// 1. intents and commit markers are written under temporary names; sync; the intents are
///    renamed into place; sync (each intent is durable, whole, before any data file exists
///    under a name that [`Archive::recover`] would not find through it);
/// 2. the data files are written under temporary names; sync; renamed into place; sync;
/// 3. the commit markers are renamed into place; sync.
///
/// `may_go_on` is asked before the data files and the commit markers are renamed into place
/// (after the syncs a stalled disk would hold).
fn write_units_local<'a>(
    root: &Path,
    intents: &[(String, Vec<u8>)],
    data: impl Iterator<Item = &'a (String, Vec<u8>)>,
    commits: &[(String, Vec<u8>)],
    may_go_on: &dyn Fn() -> Result<()>,
) -> Result<()> {
    /// Writes files under their temporary names; returns where they are in `staged`.
    fn stage<'f>(
        root: &Path,
        staged: &mut Vec<(PathBuf, PathBuf)>,
        files: impl Iterator<Item = &'f (String, Vec<u8>)>,
    ) -> Result<std::ops::Range<usize>> {
        let from = staged.len();
        for (rel, bytes) in files {
            let path = root.join(rel);
            let dir = path.parent().expect("archive paths have a directory");
            fs::create_dir_all(dir)
                .with_context(|| format!("creating {} (is the disk full or read-only?)", dir.display()))?;
            let tmp = temporary(&path);
            staged.push((tmp.clone(), path));
            let mut f = File::create(&tmp)
                .with_context(|| format!("creating {} (is the disk full or read-only?)", tmp.display()))?;
            f.write_all(bytes).with_context(|| format!("writing {} (is the disk full?)", tmp.display()))?;
        }
        Ok(from..staged.len())
    }
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result = (|| -> Result<()> {
        let intents = stage(root, &mut staged, intents.iter())?;
        let commits = stage(root, &mut staged, commits.iter())?;
        sync_filesystem(root)?;
        rename_all(&staged[intents])?;
        sync_filesystem(root)?;
        let data = stage(root, &mut staged, data)?;
        sync_filesystem(root)?;
        may_go_on()?;
        rename_all(&staged[data])?;
        sync_filesystem(root)?;
        may_go_on()?;
        rename_all(&staged[commits])?;
        sync_filesystem(root)
    })();
    if result.is_err() {
        // Those renamed already are no longer there.
        for (tmp, _) in &staged {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

/// Renames each temporary into place.
fn rename_all(staged: &[(PathBuf, PathBuf)]) -> Result<()> {
    for (tmp, path) in staged {
        fs::rename(tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    }
    Ok(())
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

    fn unit(m: &UnitManifest, content: &[u8]) -> EncodedUnit {
        EncodedUnit { manifest: m.clone(), files: m.files.iter().map(|f| (f.path.clone(), content.to_vec())).collect() }
    }

    fn put(root: &Path, rel: &str, bytes: &[u8]) {
        fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
        fs::write(root.join(rel), bytes).unwrap();
    }

    #[test]
    fn a_mistyped_object_store_url_is_refused_not_taken_for_a_local_directory() {
        for typo in
            ["s3:/bucket/prefix", "s3:bucket/prefix", "S3:/bucket", "s3//bucket/prefix", "s3/bucket", "gs:bucket"]
        {
            let e = Location::parse(typo).err().unwrap_or_else(|| panic!("{typo} was taken")).to_string();
            assert!(e.contains("s3://BUCKET/PREFIX") && e.contains(&format!("./{typo}")), "{typo}: {e}");
        }
        for dir in ["archive", "./s3/bucket", "/data/archive", "/data/s3:x", "a:b", "C:archive"] {
            assert!(matches!(Location::parse(dir), Ok(Location::Dir(_))), "{dir}");
        }
        assert!(matches!(
            Location::parse("s3://bucket/prefix"),
            Ok(Location::S3 { bucket: "bucket", prefix: "prefix" })
        ));
        let file = std::env::temp_dir().join(format!("cdrflow-not-a-dir-{}", std::process::id()));
        fs::write(&file, b"x").unwrap();
        let e = Archive::describe_location(file.to_str().unwrap()).unwrap_err().to_string();
        fs::remove_file(&file).unwrap();
        assert!(e.contains("is not a directory"), "{e}");
    }

    #[test]
    fn uncommitted_units_are_removed_and_positions_come_from_commits() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open_dir(dir.path()).unwrap();
        assert_eq!(a.recover("cdrs", 3).unwrap(), None);
        // A committed unit.
        let one = manifest(0, 99, &["dt=2022-02-01/region=38/cdrs-p003-000000000000-000000000099.parquet"]);
        a.write_units(&[unit(&one, b"x")], &|| Ok(())).unwrap();
        assert!(a.read_markers("pending", "cdrs", 3).unwrap().is_empty(), "a committed unit's intent is removed");
        // A unit interrupted after one of its two files: its intent and that file in place.
        let two = manifest(
            100,
            150,
            &[
                "dt=2022-02-01/region=38/cdrs-p003-000000000100-000000000150.parquet",
                "dt=2022-02-01/region=77/cdrs-p003-000000000100-000000000150.parquet",
            ],
        );
        put(dir.path(), &marker_path("pending", "cdrs", 3, 100, 150), &serde_json::to_vec(&two).unwrap());
        put(dir.path(), &two.files[0].path, b"y");
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

    /// A batch that fails while writing its data (here a file stands where a directory must
    /// go) leaves every unit of it with its intent and without its commit, and no temporary:
    /// recovery then removes whatever of it is there, and the batch written again commits.
    #[test]
    fn a_batch_that_fails_midway_commits_nothing_and_is_recovered_or_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open_dir(dir.path()).unwrap();
        let first = manifest(0, 9, &["dt=2022-02-01/region=38/cdrs-p003-000000000000-000000000009.parquet"]);
        let second = manifest(
            10,
            19,
            &[
                "dt=2022-02-01/region=38/cdrs-p003-000000000010-000000000019.parquet",
                "dt=2022-02-02/region=38/cdrs-p003-000000000010-000000000019.parquet",
            ],
        );
        let batch = [unit(&first, b"a"), unit(&second, b"b")];
        put(dir.path(), "dt=2022-02-02", b"not a directory");
        let err = a.write_units(&batch, &|| Ok(())).unwrap_err();
        assert!(format!("{err:#}").contains("dt=2022-02-02"), "the error names the path: {err:#}");
        assert!(a.committed("cdrs", 3).unwrap().is_empty(), "nothing of the batch is committed");
        assert_eq!(a.read_markers("pending", "cdrs", 3).unwrap().len(), 2, "both intents are durable");
        let temporaries: Vec<_> =
            walk(dir.path()).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
        assert!(temporaries.is_empty(), "no temporary is left: {temporaries:?}");
        // The path freed, a restart's recovery finds nothing committed and removes the
        // intents (the failure came before any data file was renamed into place).
        fs::remove_file(dir.path().join("dt=2022-02-02")).unwrap();
        assert_eq!(a.recover("cdrs", 3).unwrap(), None);
        assert!(a.read_markers("pending", "cdrs", 3).unwrap().is_empty());
        assert!(walk(dir.path()).iter().all(|p| !p.to_string_lossy().ends_with(".parquet")));
        // Written again, the whole batch commits, in order.
        a.write_units(&batch, &|| Ok(())).unwrap();
        assert_eq!(a.committed("cdrs", 3).unwrap(), vec![first.clone(), second.clone()]);
        assert_eq!(a.recover("cdrs", 3).unwrap(), Some(20));
        for f in first.files.iter().chain(&second.files) {
            assert!(dir.path().join(&f.path).exists(), "{} is in place", f.path);
        }
        assert!(walk(dir.path()).iter().all(|p| !p.to_string_lossy().ends_with(".tmp")));
    }

    /// A write whose fence closes stops before the step it was asked about: closed before the
    /// data files, nothing but the intents is visible; closed before the commits, the data
    /// files are in place and uncommitted. Either way nothing is committed, no temporary is
    /// left, and recovery removes the rest.
    #[test]
    fn a_write_stops_uncommitted_at_the_step_its_fence_closes_before() {
        for open_steps in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let a = Archive::open_dir(dir.path()).unwrap();
            let one = manifest(0, 9, &["dt=2022-02-01/region=38/cdrs-p003-000000000000-000000000009.parquet"]);
            let asked = std::cell::Cell::new(0);
            let fence = || {
                asked.set(asked.get() + 1);
                match asked.get() > open_steps {
                    true => anyhow::bail!("this worker lost its place in the consumer group"),
                    false => Ok(()),
                }
            };
            let err = a.write_units(&[unit(&one, b"x")], &fence).unwrap_err();
            assert!(format!("{err:#}").contains("lost its place"), "the fence's reason: {err:#}");
            assert_eq!(asked.get(), open_steps + 1, "asked before each step until it closed");
            assert!(a.committed("cdrs", 3).unwrap().is_empty(), "nothing is committed ({open_steps} steps)");
            assert_eq!(a.read_markers("pending", "cdrs", 3).unwrap().len(), 1, "the intent is there");
            let data_in_place = dir.path().join(&one.files[0].path).exists();
            assert_eq!(data_in_place, open_steps == 2, "data files renamed only past their check");
            assert!(walk(dir.path()).iter().all(|p| !p.to_string_lossy().ends_with(".tmp")), "no temporary");
            assert_eq!(a.recover("cdrs", 3).unwrap(), None);
            assert!(walk(dir.path()).iter().all(|p| !p.to_string_lossy().ends_with(".parquet")));
        }
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

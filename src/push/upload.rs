//! One NAR, streamed: serialise from the store, hash (NarHash), compress,
//! hash again (FileHash), cut into parts, upload — in bounded memory.
//!
//! A blocking thread runs the serializer and the encoder and fills part
//! buffers; the async side uploads them. Every part buffer is paid for from
//! a [`Budget`] shared by all concurrent uploads, so the memory a push uses
//! does not grow with the NAR size or the number of jobs. A NAR that fits
//! in one part goes up with one PUT; a larger one as a multipart upload with
//! a bounded number of parts in flight.
//!
//! Nothing becomes visible before the stream was checked: the computed
//! NarHash and NarSize must equal what Nix recorded for the path, or the
//! single PUT is never sent / the multipart upload is aborted instead of
//! completed. The narinfo that points at the NAR is written by the caller,
//! only after this returned `Ok`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::Cache;
use super::compress::{Compression, Encoder};
use crate::error::{Error, Result};
use crate::hash::{Algo, NixHash};
use crate::http::Request;
use crate::pathinfo::PathInfo;

/// Content type of NAR objects.
pub const NAR_CONTENT_TYPE: &str = "application/x-nix-nar";

/// S3 refuses more parts than this in one upload.
const MAX_PARTS: u64 = 10_000;

/// Memory for part buffers, shared by all uploads of a push, counted in
/// KiB. Full-size part buffers are recycled through a pool rather than
/// freed: the producers run on many threads, and a freed 8 MiB buffer
/// would otherwise stay in that thread's allocator arena, so the resident
/// size would grow with the number of threads instead of staying within
/// the budget.
#[derive(Debug, Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
    kib: usize,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Budget {
        let kib = (bytes / 1024).max(1);
        Budget {
            sem: Arc::new(Semaphore::new(kib)),
            kib,
            pool: Arc::default(),
        }
    }

    /// A buffer of capacity `size`: a recycled one when the pool has one.
    fn take(&self, size: usize) -> Vec<u8> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        match pool.iter().position(|b| b.capacity() == size) {
            Some(i) => pool.swap_remove(i),
            None => Vec::with_capacity(size),
        }
    }
}

/// The bytes of one part: owns its buffer and the budget it was paid
/// from; when the last reference drops (the upload is done), the buffer
/// goes back to the pool and the budget is released.
struct PartBuffer {
    buf: Vec<u8>,
    pool: Option<Arc<Mutex<Vec<Vec<u8>>>>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for PartBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PartBuffer {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
        }
    }
}

/// How one NAR is to be uploaded.
#[derive(Debug, Clone)]
pub struct NarJob {
    /// The compression.
    pub compression: Compression,
    /// Its level.
    pub level: i32,
    /// Part size (also the single-PUT threshold).
    pub part_size: usize,
    /// Parts uploading at once for this NAR.
    pub parts_in_flight: usize,
}

/// A NAR object that now exists in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedNar {
    /// Object key (`nar/<nix32 NarHash>.nar.zst`), also the narinfo's URL.
    pub key: String,
    /// SHA-256 of the object's bytes.
    pub file_hash: NixHash,
    /// Size of the object.
    pub file_size: u64,
}

/// The object key of a NAR: named after its NarHash, which Nix recorded
/// before the upload starts (so a multipart upload can be opened at once)
/// and which does not depend on the compressor's output.
pub fn nar_key(nar_hash: &NixHash, compression: Compression) -> String {
    format!(
        "nar/{}.nar{}",
        nar_hash.nix32_digest(),
        compression.extension()
    )
}

/// One part on its way to the uploader; its bytes carry their budget.
struct Part {
    data: Bytes,
    last: bool,
}

/// What the producer computed over the whole stream.
struct Produced {
    nar_hash: [u8; 32],
    nar_size: u64,
    file_hash: [u8; 32],
    file_size: u64,
}

/// Hashes and counts the NAR bytes before they reach the encoder, and stops
/// a NAR that grows past the size Nix recorded (the store changed under us).
struct NarTap<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
    limit: u64,
    progress: Arc<AtomicU64>,
}

impl<W: Write> Write for NarTap<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size + buf.len() as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the NAR is larger than the {} bytes Nix recorded",
                    self.limit
                ),
            ));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Receives compressed bytes: hashes them (FileHash) and ships them in
/// parts, paying for each buffer from the budget before filling it.
struct PartSink {
    buf: Vec<u8>,
    permit: Option<OwnedSemaphorePermit>,
    reserved: usize,
    part_size: usize,
    /// Bytes the next buffer is expected to need at most.
    hint: usize,
    budget: Budget,
    tx: mpsc::Sender<Part>,
    hasher: Sha256,
    size: u64,
    rt: Handle,
}

/// Buffers expected to reach this size are full part-size buffers from the
/// pool; smaller ones (small NARs) are allocated to measure.
const POOLED_FROM: usize = 1024 * 1024;

impl PartSink {
    /// Makes room for `needed` bytes in the current buffer.
    fn reserve(&mut self, needed: usize) -> io::Result<()> {
        if needed <= self.reserved {
            return Ok(());
        }
        let fresh = self.reserved == 0;
        let mut want = if fresh {
            self.hint.clamp(needed, self.part_size)
        } else {
            (self.reserved * 2).clamp(needed, self.part_size)
        };
        if want >= POOLED_FROM {
            want = self.part_size;
        }
        let kib = (want.div_ceil(1024) - self.reserved.div_ceil(1024)).min(self.budget.kib) as u32;
        let sem = self.budget.sem.clone();
        let extra = if fresh {
            // A fresh buffer waits for memory: that is the back-pressure.
            Some(
                self.rt
                    .block_on(sem.acquire_many_owned(kib))
                    .map_err(|_| io::Error::other("the upload budget was closed"))?,
            )
        } else {
            // Growing past the expected size (incompressible data) never
            // waits, so two growing buffers cannot wait for each other.
            sem.try_acquire_many_owned(kib).ok()
        };
        match (&mut self.permit, extra) {
            (Some(p), Some(e)) => p.merge(e),
            (p @ None, e) => *p = e,
            (Some(_), None) => {}
        }
        if want == self.part_size && self.buf.capacity() < want {
            let mut pooled = self.budget.take(want);
            pooled.extend_from_slice(&self.buf);
            self.buf = pooled;
        } else {
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.reserved = want;
        Ok(())
    }

    fn ship(&mut self, last: bool) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let pooled = buf.capacity() == self.part_size;
        let data = Bytes::from_owner(PartBuffer {
            buf,
            pool: pooled.then(|| self.budget.pool.clone()),
            _permit: self.permit.take(),
        });
        self.reserved = 0;
        self.hint = self.part_size;
        self.tx
            .blocking_send(Part { data, last })
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    fn finish(mut self) -> io::Result<([u8; 32], u64)> {
        self.ship(true)?;
        Ok((self.hasher.finalize().into(), self.size))
    }
}

impl Write for PartSink {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            if self.buf.len() == self.part_size {
                // Full, and more is coming: this is not the last part.
                self.ship(false)?;
            }
            let n = (self.part_size - self.buf.len()).min(data.len());
            self.reserve(self.buf.len() + n)?;
            self.buf.extend_from_slice(&data[..n]);
            self.hasher.update(&data[..n]);
            self.size += n as u64;
            data = &data[n..];
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The blocking half: NAR → NarTap → encoder → PartSink.
fn produce(
    path: PathBuf,
    job: NarJob,
    nar_size: u64,
    sink: PartSink,
    progress: Arc<AtomicU64>,
) -> io::Result<Produced> {
    let encoder = Encoder::new(job.compression, job.level, sink)?;
    let mut tap = NarTap {
        inner: encoder,
        hasher: Sha256::new(),
        size: 0,
        limit: nar_size,
        progress,
    };
    crate::nar::dump(&path, &mut tap)?;
    let NarTap {
        inner,
        hasher,
        size,
        ..
    } = tap;
    let sink = inner.finish()?;
    let (file_hash, file_size) = sink.finish()?;
    Ok(Produced {
        nar_hash: hasher.finalize().into(),
        nar_size: size,
        file_hash,
        file_size,
    })
}

/// Streams the NAR of `info` into the bucket and returns the object. The
/// object exists only when this returns `Ok`.
pub async fn upload_nar(
    cache: &Cache,
    info: &PathInfo,
    job: &NarJob,
    budget: &Budget,
    progress: Arc<AtomicU64>,
) -> Result<UploadedNar> {
    if info.nar_hash.algo != Algo::Sha256 {
        return Err(Error::Nix {
            command: "nix path-info".into(),
            message: format!(
                "{}: NarHash is {}, only sha256 is supported",
                info.path,
                info.nar_hash.algo.name()
            ),
        });
    }
    let key = nar_key(&info.nar_hash, job.compression);
    let mut job = job.clone();
    // Stay within S3's part count for huge NARs.
    let min_part = (info.nar_size + info.nar_size / 64).div_ceil(MAX_PARTS - 100) as usize;
    job.part_size = job.part_size.max(min_part);
    let budget = if job.part_size / 1024 > budget.kib {
        Budget::new(job.part_size)
    } else {
        budget.clone()
    };
    let (tx, mut rx) = mpsc::channel::<Part>(1);
    let sink = PartSink {
        buf: Vec::new(),
        permit: None,
        reserved: 0,
        part_size: job.part_size,
        hint: (info.nar_size as usize)
            .saturating_add(info.nar_size as usize / 64)
            .saturating_add(64 * 1024),
        budget,
        tx,
        hasher: Sha256::new(),
        size: 0,
        rt: Handle::current(),
    };
    let path = PathBuf::from(&info.path);
    let nar_size = info.nar_size;
    let producer_job = job.clone();
    let producer =
        tokio::task::spawn_blocking(move || produce(path, producer_job, nar_size, sink, progress));
    let produced = async move {
        match producer.await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(Error::io("archive", &info.path, e)),
            Err(e) => Err(Error::Other(format!(
                "{}: the archiver failed: {e}",
                info.path
            ))),
        }
    };

    let Some(first) = rx.recv().await else {
        // The producer stopped before the first part: its error says why.
        return Err(produced
            .await
            .err()
            .unwrap_or_else(|| Error::Other(format!("{}: the archiver sent nothing", info.path))));
    };
    let bucket = &cache.bucket;
    if first.last {
        let p = produced.await?;
        check(info, &p)?;
        let mut req = Request::new(http::Method::PUT, cache.client.path(bucket, Some(&key)))
            .header("content-type", NAR_CONTENT_TYPE)
            .body(first.data.clone());
        // The narinfo carries the FileHash; hashing the body again only to
        // sign it would cost a second pass over it.
        req.unsigned_payload = true;
        cache
            .client
            .send_ok(&format!("PutObject {bucket}/{key}"), &req)
            .await?;
        drop(first);
        return Ok(uploaded(key, &p));
    }

    let upload_id = cache
        .client
        .create_multipart(bucket, &key, NAR_CONTENT_TYPE)
        .await?;
    let result = async {
        let etags =
            upload_parts(cache, &key, &upload_id, first, &mut rx, job.parts_in_flight).await;
        // Closing the channel stops a producer that is still running.
        drop(rx);
        let produced = produced.await;
        let etags = match (etags, produced.as_ref()) {
            (Ok(etags), _) => etags,
            // The store refused a part: that is the cause, the producer
            // only saw the upload stop.
            (Err(Some(e)), _) => return Err(e),
            // The producer stopped early: its error says why.
            (Err(None), Err(_)) => return Err(produced.err().expect("matched as an error")),
            (Err(None), Ok(_)) => {
                return Err(Error::Other(format!(
                    "{key}: the archiver ended without a last part"
                )));
            }
        };
        let p = produced?;
        check(info, &p)?;
        cache
            .client
            .complete_multipart(bucket, &key, &upload_id, &etags)
            .await?;
        Ok(uploaded(key.clone(), &p))
    }
    .await;
    if result.is_err() {
        let _ = cache.client.abort_multipart(bucket, &key, &upload_id).await;
    }
    result
}

/// Uploads parts as they come, at most `limit` at a time; returns the ETags
/// in part order. `Err(None)`: the producer stopped before its last part.
async fn upload_parts(
    cache: &Cache,
    key: &str,
    upload_id: &str,
    first: Part,
    rx: &mut mpsc::Receiver<Part>,
    limit: usize,
) -> std::result::Result<Vec<String>, Option<Error>> {
    let mut etags: Vec<Option<String>> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let mut next = Some(first);
    let mut received_last = false;
    loop {
        if let Some(part) = next.take() {
            received_last = part.last;
            etags.push(None);
            let number = etags.len() as u32;
            in_flight.push(async move {
                let etag = cache
                    .client
                    .upload_part(&cache.bucket, key, upload_id, number, part.data.clone())
                    .await;
                drop(part);
                etag.map(|e| (number, e))
            });
        }
        if received_last && in_flight.is_empty() {
            break;
        }
        if !received_last && in_flight.len() < limit.max(1) {
            tokio::select! {
                part = rx.recv() => match part {
                    Some(p) => next = Some(p),
                    None => return Err(None),
                },
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    let (n, e) = done.map_err(Some)?;
                    etags[n as usize - 1] = Some(e);
                }
            }
        } else if let Some(done) = in_flight.next().await {
            let (n, e) = done.map_err(Some)?;
            etags[n as usize - 1] = Some(e);
        }
    }
    Ok(etags.into_iter().flatten().collect())
}

/// The computed NarHash and NarSize must be what Nix recorded.
fn check(info: &PathInfo, p: &Produced) -> Result<()> {
    let computed = NixHash::sha256(p.nar_hash);
    if p.nar_size != info.nar_size || computed != info.nar_hash {
        return Err(Error::Crypto {
            context: info.path.clone(),
            message: format!(
                "the store contents do not match Nix's database: Nix recorded {} ({} bytes), \
                 the NAR hashes to {} ({} bytes); nothing was uploaded for this path. \
                 Check the store with `nix-store --verify --check-contents`",
                info.nar_hash, info.nar_size, computed, p.nar_size
            ),
        });
    }
    Ok(())
}

fn uploaded(key: String, p: &Produced) -> UploadedNar {
    UploadedNar {
        key,
        file_hash: NixHash::sha256(p.file_hash),
        file_size: p.file_size,
    }
}

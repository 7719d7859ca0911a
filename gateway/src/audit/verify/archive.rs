//! Signed export archives for the national disaster-recovery centre: a tar file of whole segment
//! files, the checkpoints over them, the signer certificates, and a `MANIFEST.json` (gateway,
//! range, per-file SHA-256, the latest checkpoint, the Merkle frontier at the first record)
//! signed with the gateway's key in `MANIFEST.sig`. Extracted, the archive is an audit directory
//! that `splpd audit verify` checks like a live log, its manifest included.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Read, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use splpd_certs::load::{read_certificates, read_private_key};
use time::format_description::well_known::Rfc3339;

use super::proof::CheckpointJson;
use super::{
    CheckpointReader, Reading, certificate_key_sha256, check_gateway_certificate, check_own_certificate, ensure_log,
    signer_file_name, verify_log,
};
use crate::audit::checkpoint::{Checkpoint, CheckpointSigner, SignatureAlgorithm};
use crate::audit::log::CHECKPOINTS_FILE;
use crate::audit::merkle::Hash;
use crate::audit::now_nanos;
use crate::audit::segment::list_segments;
use crate::audit::segment::{FRAME_HEADER_LEN, HEADER_LEN};

/// The manifest's file name in an archive.
pub const MANIFEST_FILE: &str = "MANIFEST.json";
/// The archive's first file, which says what it is: the manifest comes last, so that a folder
/// extracted in part (cut before the manifest) would otherwise pass for a plain audit log.
pub const EXPORT_MARKER_FILE: &str = "SPLPD-EXPORT.txt";
/// What [`EXPORT_MARKER_FILE`] holds.
const EXPORT_MARKER_TEXT: &[u8] = b"splpd-audit-export/v1: a signed export of an splpd audit log. MANIFEST.json and \
MANIFEST.sig come last in the archive; a folder holding this file without them was extracted in part. Check it with \
`splpd audit verify DIR --ca CA.crt`.\n";
/// The file of the manifest's signature: the raw signature over the bytes of `MANIFEST.json`
/// (ASN.1 DER for ECDSA, 64 bytes for Ed25519), made by the key named in the manifest.
pub const MANIFEST_SIG_FILE: &str = "MANIFEST.sig";
/// The `format` of a manifest.
pub const MANIFEST_FORMAT: &str = "splpd-audit-export/v1";

/// What an export archive holds, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// The gateway whose log this is.
    pub gateway: String,
    /// When the archive was made (RFC 3339).
    pub created: String,
    /// The records asked for.
    pub requested: SeqRange,
    /// The records the archive holds: whole segments, so possibly more than asked for.
    pub records: SeqRange,
    /// The Merkle tree over the records before the first one held, as its frontier (the roots of
    /// its perfect subtrees, left to right, lowercase hex): what a verifier starts the tree from.
    pub start: Start,
    /// Every file of the archive but the manifest and its signature.
    pub files: Vec<FileEntry>,
    /// The latest checkpoint in the archive.
    pub latest_checkpoint: Option<CheckpointJson>,
    /// The key that signed the manifest.
    pub signer: ManifestSigner,
}

impl Manifest {
    /// The start frontier as hashes; a malformed entry makes it empty, which
    /// [`Tree::from_frontier`](crate::audit::merkle::Tree::from_frontier) refuses for a
    /// non-empty tree.
    pub fn start_frontier(&self) -> Vec<Hash> {
        let hashes: Option<Vec<Hash>> = self
            .start
            .frontier
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|b| Hash::try_from(b.as_slice()).ok()))
            .collect();
        hashes.unwrap_or_default()
    }
}

/// Records `first_seq..=last_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    /// The first record.
    pub first_seq: u64,
    /// The last record.
    pub last_seq: u64,
}

/// The tree before an archive's first record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// Records before the first one held (the first one's sequence number).
    pub tree_size: u64,
    /// The tree's frontier, hex.
    pub frontier: Vec<String>,
}

/// One file of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its name (no directories).
    pub name: String,
    /// Its length.
    pub bytes: u64,
    /// SHA-256 of its content, lowercase hex.
    pub sha256: String,
}

/// Who signed a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSigner {
    /// As checkpoints name it: ECDSA_P256_SHA256, ECDSA_P384_SHA384 or ED25519.
    pub signature_algorithm: String,
    /// SHA-256 of the key's SubjectPublicKeyInfo, hex.
    pub key_sha256: String,
    /// The certificate's file in the archive.
    pub certificate: String,
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The audit directory.
    pub dir: PathBuf,
    /// The archive to write (must not exist yet).
    pub to: PathBuf,
    /// The first record wanted (default 0).
    pub from_seq: Option<u64>,
    /// The last record wanted (default the last record).
    pub to_seq: Option<u64>,
    /// The gateway's private key, to sign the manifest.
    pub key: PathBuf,
    /// The key's certificate (default: `signer-<key sha256>.crt` in the directory).
    pub cert: Option<PathBuf>,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// The manifest written.
    pub manifest: Manifest,
    /// Segment files in the archive.
    pub segments: usize,
    /// Checkpoints in the archive.
    pub checkpoints: u64,
    /// Bytes of the archive.
    pub bytes: u64,
    /// Worth telling: torn tails, records not yet covered by a checkpoint.
    pub warnings: Vec<String>,
}

/// Why an export failed; nothing is left at the target then.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The log does not verify: exporting it would hand on the damage unnoticed.
    #[error("the log does not verify, so it is not exported:\n  {}", .0.join("\n  "))]
    Damaged(Vec<String>),
    /// Anything else, said in full.
    #[error("{0}")]
    Other(String),
}

fn other(text: impl Into<String>) -> ExportError {
    ExportError::Other(text.into())
}

/// The private key that signs a manifest.
enum ManifestKey {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl ManifestKey {
    fn load(path: &Path) -> Result<(Self, SignatureAlgorithm, [u8; 32]), String> {
        // The checkpoint signer tells the key's kind and hash, and refuses kinds we cannot use.
        let signer = CheckpointSigner::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let der = read_private_key(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let der = der.secret_der();
        let bad = |_| format!("{}: the key cannot be loaded for signing", path.display());
        let key = match signer.algorithm() {
            SignatureAlgorithm::EcdsaP256Sha256 => Self::Ecdsa(
                EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der).map_err(bad)?,
            ),
            SignatureAlgorithm::EcdsaP384Sha384 => Self::Ecdsa(
                EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, der).map_err(bad)?,
            ),
            SignatureAlgorithm::Ed25519 => Self::Ed25519(Ed25519KeyPair::from_pkcs8(der).map_err(bad)?),
        };
        Ok((key, signer.algorithm(), *signer.key_sha256()))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Self::Ecdsa(pair) => pair
                .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "signing the manifest failed".to_owned()),
            Self::Ed25519(pair) => pair
                .try_sign(message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "signing the manifest failed".to_owned()),
        }
    }
}

/// Checks a manifest signature made with `algorithm` by the key of the certificate `cert_der`.
fn verify_signature(algorithm: &str, cert_der: &[u8], message: &[u8], sig: &[u8]) -> Result<(), String> {
    let verification: &dyn signature::VerificationAlgorithm = match SignatureAlgorithm::from_name(algorithm) {
        Some(SignatureAlgorithm::EcdsaP256Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
        Some(SignatureAlgorithm::EcdsaP384Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
        Some(SignatureAlgorithm::Ed25519) => &signature::ED25519,
        None => return Err(format!("unknown signature algorithm {algorithm:?}")),
    };
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| format!("certificate: {e}"))?;
    UnparsedPublicKey::new(verification, &cert.public_key().subject_public_key.data)
        .verify(message, sig)
        .map_err(|_| format!("{MANIFEST_SIG_FILE} does not verify: the manifest was changed after it was signed, or signed by another key"))
}

/// SHA-256 while reading.
struct Hashing<R> {
    inner: R,
    ctx: digest::Context,
    bytes: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Self { inner, ctx: digest::Context::new(&digest::SHA256), bytes: 0 }
    }

    fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.ctx.finish().as_ref()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// SHA-256 and length of a file.
fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut hashing = Hashing::new(crate::audit::open_log_file(path)?);
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(hashing.finish())
}

/// The checkpoints with `lo <= tree_size <= hi`, as frames, streamed; at most `limit` of them.
struct CheckpointFrames {
    reader: CheckpointReader,
    lo: u64,
    hi: u64,
    limit: u64,
    taken: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl CheckpointFrames {
    fn open(dir: &Path, lo: u64, hi: u64, limit: u64) -> io::Result<Self> {
        let reader = CheckpointReader::open(dir).map_err(io::Error::other)?;
        Ok(Self { reader, lo, hi, limit, taken: 0, buf: Vec::new(), pos: 0 })
    }

    /// The next frame wanted, with its checkpoint.
    fn next_frame(&mut self) -> io::Result<Option<Checkpoint>> {
        while self.taken < self.limit {
            let Some(located) = self.reader.next_checkpoint().map_err(io::Error::other)? else { return Ok(None) };
            let size = located.checkpoint.tree_size;
            if size < self.lo || size > self.hi {
                continue;
            }
            let payload = self.reader.payload();
            self.buf.clear();
            self.buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
            self.buf.extend_from_slice(payload);
            self.pos = 0;
            self.taken += 1;
            return Ok(Some(located.checkpoint));
        }
        Ok(None)
    }
}

impl Read for CheckpointFrames {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() && self.next_frame()?.is_none() {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The length of a segment's header and its first `records` frames, read from the frame
/// headers alone (the frames were checked by the verification before).
fn frames_len(path: &Path, records: u64) -> io::Result<u64> {
    let mut file = crate::audit::open_log_file(path)?;
    let file_len = file.metadata()?.len();
    let mut at = HEADER_LEN as u64;
    for _ in 0..records {
        file.seek(SeekFrom::Start(at))?;
        let mut head = [0u8; FRAME_HEADER_LEN];
        file.read_exact(&mut head)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        at += (FRAME_HEADER_LEN as u64) + u64::from(len);
    }
    if at > file_len {
        return Err(io::Error::other(format!("{} is shorter than its records", path.display())));
    }
    Ok(at)
}

/// A tar entry header for a regular file of `size` bytes.
fn tar_header(size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    // As the log's own files: extracted, the records are not for every account on the host.
    header.set_mode(crate::audit::FILE_MODE);
    header.set_mtime(mtime);
    header
}

/// Exports records `from_seq..=to_seq` of the log in `options.dir` as a signed tar archive at
/// `options.to`: the log is verified first (a damaged log is not exported), the whole segments
/// holding the range are copied up to their last checked record, with the checkpoints over
/// them, every signer certificate, and the signed manifest. Written to `<to>.partial` and
/// renamed once complete, so that an archive at `to` is always whole.
pub fn export(options: &ExportOptions) -> Result<ExportSummary, ExportError> {
    let dir = &options.dir;
    // Before the key and certificate: without a log, the missing signer certificate would hide
    // the real mistake.
    ensure_log(dir).map_err(|e| other(e.to_string()))?;
    if options.to.exists() {
        return Err(other(format!("{} exists already; give a new file name", options.to.display())));
    }
    if let (Some(from), Some(to)) = (options.from_seq, options.to_seq)
        && from > to
    {
        return Err(other(format!(
            "the range is reversed: from (--from-seq {from}) is after to (--to-seq {to}); give the first record first"
        )));
    }
    let (key, algorithm, key_sha256) = ManifestKey::load(&options.key).map_err(other)?;
    let signer_name = signer_file_name(&key_sha256);
    // Without --cert, the certificate is the one the log keeps for the key: none means the key
    // never signed this log, the likelier mistake being another gateway's key.
    if options.cert.is_none() && !dir.join(&signer_name).exists() {
        return Err(other(format!(
            "{} has not signed this log's checkpoints ({} keeps no {signer_name}): give the key of the gateway whose \
             log this is (its [gateway] key, or [audit] signing_key)",
            options.key.display(),
            dir.display()
        )));
    }
    let cert_path = options.cert.clone().unwrap_or_else(|| dir.join(&signer_name));
    let cert_der = read_certificates(&cert_path)
        .map_err(|e| other(format!("{}: {e} (give the key's certificate with --cert)", cert_path.display())))?
        .into_iter()
        .next()
        .ok_or_else(|| other(format!("{} holds no certificate", cert_path.display())))?
        .to_vec();
    if certificate_key_sha256(&cert_der).map_err(other)? != key_sha256 {
        return Err(other(format!(
            "{} is not the certificate of the key {}",
            cert_path.display(),
            options.key.display()
        )));
    }

    let segments_before = list_segments(dir).map_err(|e| other(format!("{}: {e}", dir.display())))?;
    let Some((log_first, _)) = segments_before.first() else {
        return Err(other(format!("{}: no segment files", dir.display())));
    };
    let from = options.from_seq.unwrap_or(*log_first);
    let start_seq =
        segments_before.iter().rev().find(|(first, _)| *first <= from).map_or(*log_first, |(first, _)| *first);
    let mut frontier = None;
    let report = verify_log(dir, None, &mut |seq, _, _, tree| {
        if seq == start_seq {
            frontier = Some(tree.frontier().to_vec());
        }
        Reading::On
    })
    .map_err(|e| other(e.to_string()))?;
    if !report.is_ok() {
        let mut problems = report.problems;
        if report.problems_omitted > 0 {
            problems.push(format!("… and {} more", report.problems_omitted));
        }
        return Err(ExportError::Damaged(problems));
    }
    let total = report.tree_size;
    if total == report.first_seq {
        return Err(other("the log holds no records"));
    }
    // The manifest is signed for the gateway whose log this is: its checkpoints name it, and a
    // verified log with records has one.
    let latest = report
        .latest
        .as_ref()
        .map(|l| &l.checkpoint)
        .ok_or_else(|| other("the log has no checkpoint, so which gateway's it is is not known"))?;
    let gateway = latest.gateway.clone();
    let signs_now = latest.key_sha256.clone();
    let signs_now_size = latest.tree_size;

    // The certificate shipped for the manifest's key is the one checked. When the directory keeps
    // one for that key already (`signer-<sha>.crt`, which the gateway wrote when the key began
    // signing checkpoints), the archive ships that file, not the one given with --cert: the
    // checkpoints that key signed are checked against it, and one file name holds one
    // certificate, so replacing it would change what those checkpoints are checked against
    // (with --ca, a renewed certificate need not have been valid when they were signed). So that
    // file is checked too, with the same rules as the one given.
    let now = now_nanos();
    check_own_certificate(&cert_der, &gateway, now).map_err(|problem| {
        other(format!(
            "{}: {}: the manifest of gateway {gateway}'s log must be signed with that gateway's own key and its \
             current server certificate (give them with --key and --cert)",
            cert_path.display(),
            problem.describe("the log's checkpoints name", &gateway, "this certificate")
        ))
    })?;
    // And with the key that signs the log now: a certificate naming the gateway proves nothing
    // by itself (anyone can make one). No CA is checked here: checkpoints re-signed with another
    // key would make that key the latest's, which `verify --ca` tells.
    if signs_now.as_slice() != key_sha256.as_slice() {
        return Err(other(format!(
            "{} is not the key that signs this log: its latest checkpoint ({} records) was signed by key {}, which \
             must sign the archive too; give the gateway's [gateway] key, or its [audit] signing_key when it has one",
            options.key.display(),
            signs_now_size,
            hex::encode(&signs_now)
        )));
    }
    let kept_path = dir.join(&signer_name);
    let shipped = if kept_path.exists() {
        let bytes =
            crate::audit::read_log_file(&kept_path).map_err(|e| other(format!("{}: {e}", kept_path.display())))?;
        let der =
            first_certificate(&bytes).ok_or_else(|| other(format!("{} holds no certificate", kept_path.display())))?;
        if der != cert_der {
            check_own_certificate(&der, &gateway, now).map_err(|problem| {
                other(format!(
                    "{}: {}: the archive ships this file, the certificate the log keeps for the key {}, for the \
                     manifest and the checkpoints that key signed, so it must be fit to sign the manifest too; sign \
                     with the key the gateway signs with now (--key), or renew this certificate for the same key and \
                     put it in place of this file",
                    kept_path.display(),
                    problem.describe("the log's checkpoints name", &gateway, "this certificate"),
                    options.key.display()
                ))
            })?;
        }
        bytes
    } else {
        fs::read(&cert_path).map_err(|e| other(format!("{}: {e}", cert_path.display())))?
    };
    let to = options.to_seq.unwrap_or(total - 1);
    if from > to || to >= total || from < report.first_seq {
        return Err(other(format!(
            "records {from}..={to} are not in the log, which holds records {}..={}",
            report.first_seq,
            total - 1
        )));
    }
    let frontier = frontier.ok_or_else(|| other("internal error: no frontier at the first record"))?;

    // Segments now (the gateway may have started one meanwhile), each with its records.
    let segments = list_segments(dir).map_err(|e| other(format!("{}: {e}", dir.display())))?;
    let mut included = Vec::new();
    for (k, (first, path)) in segments.iter().enumerate() {
        let end = segments.get(k + 1).map_or(total, |(next, _)| (*next).min(total));
        if *first <= to && end > from && *first < total {
            included.push((*first, end, path.clone()));
        }
    }
    let (Some(first_included), Some(last_included)) = (included.first(), included.last()) else {
        return Err(other("no segment holds the records asked for"));
    };
    if first_included.0 != start_seq {
        return Err(other("the log's segments changed during the export; try again"));
    }
    let end_seq = last_included.1;

    // Checkpoints over the archive's records: counted first, for the tar header's size.
    let (lo, hi) = (start_seq, end_seq);
    let mut counting = CheckpointFrames::open(dir, lo, hi, u64::MAX).map_err(|e| other(e.to_string()))?;
    let (mut checkpoints, mut checkpoints_bytes, mut latest, mut covering) = (0u64, 0u64, None, 0u64);
    while let Some(cp) = counting.next_frame().map_err(|e| other(e.to_string()))? {
        checkpoints += 1;
        checkpoints_bytes += counting.buf.len() as u64;
        if cp.tree_size > start_seq {
            covering += 1;
        }
        latest = Some(cp);
    }
    // An archive that no checkpoint covers proves nothing, fails `verify` once extracted, and
    // would yet let retention delete the segments it holds: refused before anything is written.
    if covering == 0 {
        return Err(other(uncovered_range(dir, (from, to), (start_seq, end_seq))?));
    }

    // Every signer certificate of the directory, and the manifest signer's.
    let mut certs: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| other(format!("{}: {e}", dir.display())))? {
        let entry = entry.map_err(|e| other(format!("{}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("signer-") && name.ends_with(".crt") {
            let bytes = crate::audit::read_log_file(&entry.path())
                .map_err(|e| other(format!("{}: {e}", entry.path().display())))?;
            certs.push((name, bytes));
        }
    }
    // The manifest signer's certificate: the very bytes checked above.
    certs.retain(|(name, _)| *name != signer_name);
    certs.push((signer_name.clone(), shipped));
    certs.sort();

    let partial = partial_path(&options.to);
    let result = write_archive(
        &partial,
        &included,
        (lo, hi, checkpoints, checkpoints_bytes),
        &certs,
        dir,
        |files| Manifest {
            format: MANIFEST_FORMAT.to_owned(),
            gateway,
            created: super::rfc3339_nanos(now_nanos()).unwrap_or_default(),
            requested: SeqRange { first_seq: from, last_seq: to },
            records: SeqRange { first_seq: start_seq, last_seq: end_seq - 1 },
            start: Start { tree_size: start_seq, frontier: frontier.iter().map(hex::encode).collect() },
            files,
            latest_checkpoint: latest.as_ref().map(CheckpointJson::from),
            signer: ManifestSigner {
                signature_algorithm: algorithm.as_str().to_owned(),
                key_sha256: hex::encode(key_sha256),
                certificate: signer_name.clone(),
            },
        },
        &key,
    );
    let (manifest, bytes) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    fs::rename(&partial, &options.to).map_err(|e| other(format!("{}: {e}", options.to.display())))?;

    let mut warnings = report.warnings;
    // Retention removes a segment only once an export on record holds it, and only records a
    // checkpoint in the archive covers are held in a way the archive can prove: those after its
    // last checkpoint are left out of the entry, so their segment stays until an export covers it.
    let covered = latest.as_ref().map_or(start_seq, |cp| cp.tree_size).min(end_seq);
    let entry = crate::audit::retention::ExportEntry {
        // Whole, so that retention's messages name the archive wherever they are read from.
        archive: fs::canonicalize(&options.to).unwrap_or_else(|_| options.to.clone()).display().to_string(),
        sha256: hash_file(&options.to).map(|(_, hex)| hex).unwrap_or_default(),
        first_seq: start_seq,
        last_seq: covered.saturating_sub(1),
        created: manifest.created.clone(),
    };
    if covered > start_seq
        && let Err(e) = crate::audit::retention::record_export(dir, &entry)
    {
        warnings.push(format!(
            "the export could not be recorded in {}: {e}; retention will not remove the segments it holds",
            dir.join(crate::audit::retention::EXPORTS_FILE).display()
        ));
    }
    if covered < end_seq {
        warnings.push(format!(
            "records {covered}..{end_seq} in the archive come after its last checkpoint, so it cannot prove them, and \
             retention keeps their segment: to have them covered, export a range that ends at or after a later \
             checkpoint (`splpd audit verify` on the log lists them)"
        ));
    }
    Ok(ExportSummary { manifest, segments: included.len(), checkpoints, bytes, warnings })
}

/// Why the archive of records `start..end` (the whole segments holding the records `from..=to`
/// asked for) would be covered by no checkpoint, with the ranges that would be: ending at or
/// after the next checkpoint, or starting before the one before.
fn uncovered_range(dir: &Path, (from, to): (u64, u64), (start, end): (u64, u64)) -> Result<String, ExportError> {
    let mut reader = CheckpointReader::open(dir).map_err(|e| other(e.to_string()))?;
    let (mut before, mut after) = (None, None);
    while let Some(located) = reader.next_checkpoint().map_err(|e| other(e.to_string()))? {
        let size = located.checkpoint.tree_size;
        if size > 0 && size <= start {
            before = Some(size);
        } else if size >= end && after.is_none() {
            after = Some(size);
        }
    }
    let mut text = format!(
        "no checkpoint covers any of records {start}..={}, which the archive would hold (the whole segments holding \
         records {from}..={to}): it would prove nothing, so it is not written",
        end - 1
    );
    let nearest: Vec<String> = before.iter().chain(after.iter()).map(|s| format!("{s} records")).collect();
    if !nearest.is_empty() {
        text.push_str(&format!("; the nearest checkpoints cover {}", nearest.join(" and ")));
    }
    let mut ways = Vec::new();
    if let Some(after) = after {
        ways.push(format!("end the range at or after the checkpoint of {after} records (--to-seq {})", after - 1));
    }
    if let Some(before) = before {
        ways.push(format!("start it before the checkpoint of {before} records (--from-seq {} or earlier)", before - 1));
    }
    if after.is_none() {
        ways.push(
            "wait for the next checkpoint, which a running gateway signs within one and a half checkpoint_intervals \
             of its last records, and export again"
                .to_owned(),
        );
    }
    text.push_str(&format!("; to export records a checkpoint covers, {}", ways.join(", or ")));
    Ok(text)
}

/// The first certificate of a file's bytes, PEM or DER, as DER.
fn first_certificate(bytes: &[u8]) -> Option<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return CertificateDer::pem_slice_iter(bytes).next()?.ok().map(|der| der.to_vec());
    }
    (bytes.first() == Some(&0x30)).then(|| bytes.to_vec())
}

fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    to.with_file_name(name)
}

/// Writes the archive: its marker, segments, checkpoints, certificates, then the manifest `make_manifest`
/// builds from the file list, and its signature.
fn write_archive(
    path: &Path,
    segments: &[(u64, u64, PathBuf)],
    (lo, hi, checkpoints, checkpoints_bytes): (u64, u64, u64, u64),
    certs: &[(String, Vec<u8>)],
    dir: &Path,
    make_manifest: impl FnOnce(Vec<FileEntry>) -> Manifest,
    key: &ManifestKey,
) -> Result<(Manifest, u64), ExportError> {
    let io_err = |e: io::Error| other(format!("{}: {e}", path.display()));
    let file = crate::audit::new_file(OpenOptions::new().write(true).create_new(true)).open(path).map_err(io_err)?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    let mtime = u64::try_from(now_nanos() / 1_000_000_000).unwrap_or(0);
    let mut files = Vec::new();

    tar.append_data(&mut tar_header(EXPORT_MARKER_TEXT.len() as u64, mtime), EXPORT_MARKER_FILE, EXPORT_MARKER_TEXT)
        .map_err(io_err)?;
    let sha256 = hex::encode(digest::digest(&digest::SHA256, EXPORT_MARKER_TEXT).as_ref());
    files.push(FileEntry { name: EXPORT_MARKER_FILE.to_owned(), bytes: EXPORT_MARKER_TEXT.len() as u64, sha256 });

    for (first, end, segment) in segments {
        let len = frames_len(segment, end - first).map_err(|e| other(format!("{}: {e}", segment.display())))?;
        let name = segment.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let source = crate::audit::open_log_file(segment).map_err(|e| other(format!("{}: {e}", segment.display())))?;
        let mut hashing = Hashing::new(source.take(len));
        tar.append_data(&mut tar_header(len, mtime), &name, &mut hashing).map_err(io_err)?;
        let (bytes, sha256) = hashing.finish();
        if bytes != len {
            return Err(other(format!("{} shrank while it was being copied", segment.display())));
        }
        files.push(FileEntry { name, bytes, sha256 });
    }

    let frames = CheckpointFrames::open(dir, lo, hi, checkpoints).map_err(io_err)?;
    let mut hashing = Hashing::new(frames);
    tar.append_data(&mut tar_header(checkpoints_bytes, mtime), CHECKPOINTS_FILE, &mut hashing).map_err(io_err)?;
    let (bytes, sha256) = hashing.finish();
    if bytes != checkpoints_bytes {
        return Err(other(format!("{CHECKPOINTS_FILE} changed while it was being copied; try again")));
    }
    files.push(FileEntry { name: CHECKPOINTS_FILE.to_owned(), bytes, sha256 });

    for (name, bytes) in certs {
        tar.append_data(&mut tar_header(bytes.len() as u64, mtime), name, bytes.as_slice()).map_err(io_err)?;
        let sha256 = hex::encode(digest::digest(&digest::SHA256, bytes).as_ref());
        files.push(FileEntry { name: name.clone(), bytes: bytes.len() as u64, sha256 });
    }

    let manifest = make_manifest(files);
    let mut text = serde_json::to_vec_pretty(&manifest).map_err(|e| other(e.to_string()))?;
    text.push(b'\n');
    let sig = key.sign(&text).map_err(other)?;
    tar.append_data(&mut tar_header(text.len() as u64, mtime), MANIFEST_FILE, text.as_slice()).map_err(io_err)?;
    tar.append_data(&mut tar_header(sig.len() as u64, mtime), MANIFEST_SIG_FILE, sig.as_slice()).map_err(io_err)?;
    let mut out = tar.into_inner().map_err(io_err)?;
    out.flush().map_err(io_err)?;
    let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    let bytes = file.metadata().map_err(io_err)?.len();
    Ok((manifest, bytes))
}

/// The tree over the records before the first one held in `dir`: an extracted archive's from
/// its manifest's start frontier, a live log's from what retention left (`base.json`), empty
/// for a log that starts at record 0. The frontier is not trusted here: every proof built on it
/// ends in a signed checkpoint's root, which a wrong one would not reach.
pub(crate) fn starting_tree(dir: &Path) -> Result<crate::audit::merkle::Tree, String> {
    let path = dir.join(MANIFEST_FILE);
    if !path.exists() {
        return crate::audit::retention::base_tree(dir);
    }
    let text = crate::audit::read_log_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("{}: not a manifest: {e}", path.display()))?;
    crate::audit::merkle::Tree::from_frontier(manifest.start.tree_size, manifest.start_frontier())
        .map_err(|e| format!("{}: the start frontier is malformed: {e}", path.display()))
}

/// Checks the manifest of an extracted archive in `dir`: its signature by the certificate it
/// names, that this certificate is the manifest's gateway's (with `ca` (DER), issued by that CA
/// and valid when the manifest was made), every listed file's length and SHA-256, that no
/// segment is there unlisted, and that its latest checkpoint is the last one of
/// `checkpoints.log`, of the same gateway. Returns the manifest and the problems found; `Err`
/// when there is no readable manifest at all.
pub(crate) fn check_manifest(
    dir: &Path,
    segments: &[(u64, PathBuf)],
    ca: Option<&[u8]>,
) -> Result<(Manifest, Vec<String>), String> {
    let text = crate::audit::read_log_file(&dir.join(MANIFEST_FILE)).map_err(|e| e.to_string())?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| format!("not a manifest: {e}"))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(format!("unknown format {:?}; expected {MANIFEST_FORMAT}", manifest.format));
    }
    let mut problems = Vec::new();
    let plain = |name: &str| !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..";

    let cert_name = &manifest.signer.certificate;
    let signed = (|| {
        if !plain(cert_name) {
            return Err(format!("the signer certificate's name {cert_name:?} is not a plain file name"));
        }
        let sig = crate::audit::read_log_file(&dir.join(MANIFEST_SIG_FILE)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!(
                "{MANIFEST_SIG_FILE} is missing: the archive is incomplete; extract the whole archive again into an \
                 empty directory"
            ),
            _ => format!("{MANIFEST_SIG_FILE}: {e}"),
        })?;
        let der = read_certificates(&dir.join(cert_name))
            .map_err(|e| format!("{cert_name}: {e}"))?
            .into_iter()
            .next()
            .ok_or_else(|| format!("{cert_name} holds no certificate"))?;
        if hex::encode(certificate_key_sha256(&der)?) != manifest.signer.key_sha256.to_ascii_lowercase() {
            return Err(format!("{cert_name} is not the certificate of the key the manifest names"));
        }
        verify_signature(&manifest.signer.signature_algorithm, &der, &text, &sig)?;
        Ok(der)
    })();
    match signed {
        // Signed, but by whom: as for checkpoints, the gateway's own certificate.
        Ok(der) => {
            let by_gateway = time::OffsetDateTime::parse(&manifest.created, &Rfc3339)
                .map_err(|e| format!("its time created {:?} is not RFC 3339: {e}", manifest.created))
                .and_then(|created| {
                    let at = i64::try_from(created.unix_timestamp_nanos()).unwrap_or(i64::MAX);
                    check_gateway_certificate(&der, &manifest.gateway, ca, at).map_err(|problem| {
                        problem.describe("it names", &manifest.gateway, &format!("its signer certificate {cert_name}"))
                    })
                });
            if let Err(e) = by_gateway {
                problems.push(format!("{MANIFEST_FILE}: {e}"));
            }
        }
        // Each reason says itself what failed: the signature, or a file it needs.
        Err(e) => problems.push(format!("{MANIFEST_FILE}: not proven signed: {e}")),
    }

    for entry in &manifest.files {
        if !plain(&entry.name) {
            problems.push(format!("{MANIFEST_FILE}: {:?} is not a plain file name", entry.name));
            continue;
        }
        match hash_file(&dir.join(&entry.name)) {
            Ok((bytes, sha256)) if bytes == entry.bytes && sha256 == entry.sha256.to_ascii_lowercase() => {}
            Ok((bytes, sha256)) => problems.push(format!(
                "{}: {bytes} bytes with SHA-256 {sha256}, but the manifest says {} bytes with SHA-256 {}: the file was \
                 changed after the export",
                entry.name, entry.bytes, entry.sha256
            )),
            Err(e) => problems.push(format!("{}: listed in {MANIFEST_FILE} but cannot be read: {e}", entry.name)),
        }
    }
    for (_, path) in segments {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !manifest.files.iter().any(|f| f.name == name) {
            problems.push(format!("{name}: a segment that {MANIFEST_FILE} does not list"));
        }
    }
    let mut reader = CheckpointReader::open(dir).map_err(|e| e.to_string())?;
    let mut last = None;
    while let Ok(Some(located)) = reader.next_checkpoint() {
        last = Some(located.checkpoint);
    }
    if last.as_ref().map(CheckpointJson::from) != manifest.latest_checkpoint {
        problems.push(format!("{MANIFEST_FILE}: its latest checkpoint is not the last one in {CHECKPOINTS_FILE}"));
    }
    if let Some(last) = &last
        && last.gateway != manifest.gateway
    {
        problems.push(format!(
            "{MANIFEST_FILE}: it names gateway {}, but the checkpoints in {CHECKPOINTS_FILE} are gateway {}'s",
            manifest.gateway, last.gateway
        ));
    }
    Ok((manifest, problems))
}

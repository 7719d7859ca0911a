//! The audit log read back from its files alone (design §5), for `splpd audit`: verifying a whole
//! log directory (frames, checksums, sequence, the Merkle tree, every signed checkpoint),
//! querying its records, proving that one record is in the log, checking such a proof without
//! the log, and exporting a signed archive.
//!
//! Everything streams: the records are read once, one at a time, with the Merkle tree kept as its
//! compact range (at most 64 hashes) and proofs computed from O(log n) subtree roots, so a log of
//! any size needs the same few megabytes. `docs/audit-log.md` describes the data design.

mod archive;
mod consistency;
mod json;
mod proof;
mod query;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message as _;
use splpd_certs::id::Identity;
use splpd_certs::load::{read_certificates, sha256};

pub use self::archive::{
    EXPORT_MARKER_FILE, ExportError, ExportOptions, ExportSummary, FileEntry, MANIFEST_FILE, MANIFEST_FORMAT,
    MANIFEST_SIG_FILE, Manifest, ManifestSigner, SeqRange, Start, export,
};
pub use self::consistency::{
    CONSISTENCY_PROOF_FORMAT, CheckedConsistency, check_consistency_proof, make_consistency_proof,
    make_kept_consistency_proof, read_kept_checkpoint,
};
pub use self::json::{RecordJson, rfc3339_nanos};
pub use self::proof::{
    CheckedProof, CheckpointJson, INCLUSION_PROOF_FORMAT, Pick, ProofError, check_proof, make_proof, removed_note,
};
pub use self::query::{AddressMatch, Filter, Pattern, QueryError, QuerySummary, StatusMatch, query};
use super::ExchangeRecord;
use super::checkpoint::{Checkpoint, verify_checkpoint};
use super::log::CHECKPOINTS_FILE;
use super::merkle::{Hash, Tree, leaf_hash};
use super::segment::{BASE_FILE, SegmentError, SegmentReader, list_segments, read_base};

/// A checkpoint frame longer than this is damage: a real one is a few hundred bytes.
const MAX_CHECKPOINT_LEN: u32 = 64 * 1024;

/// How many problems a report lists one by one; the rest are counted.
const MAX_PROBLEMS: usize = 50;

/// The file name of the certificate of the key whose SubjectPublicKeyInfo hashes to `key_sha256`,
/// as the gateway keeps it in the audit directory.
pub fn signer_file_name(key_sha256: &[u8]) -> String {
    format!("signer-{}.crt", hex::encode(key_sha256))
}

/// One checkpoint of `checkpoints.log`, with where it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// Its position in the file, from 0.
    pub index: u64,
    /// The byte offset of its frame in the file.
    pub offset: u64,
    /// The checkpoint.
    pub checkpoint: Checkpoint,
}

/// `checkpoints.log` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A frame is damaged, and it is not a torn last frame.
    #[error("{}: byte {offset}, checkpoint {index}: {what}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Where the bad frame starts.
        offset: u64,
        /// The index the checkpoint would have.
        index: u64,
        /// What is wrong.
        what: String,
    },
}

/// Reads `checkpoints.log` one frame at a time (`u32 length | u32 CRC32C | Checkpoint`), up to the
/// length it had when opened, so that a gateway appending meanwhile is no problem.
///
/// A last frame that is incomplete, or fails its checksum with nothing after it, is what a crash
/// while writing it leaves: it ends the reading and is reported by [`torn`](Self::torn).
#[derive(Debug)]
pub struct CheckpointReader {
    path: PathBuf,
    reader: Option<BufReader<io::Take<File>>>,
    len: u64,
    offset: u64,
    index: u64,
    payload: Vec<u8>,
    torn: Option<(u64, u64)>,
    /// The last error was a whole frame that is damaged: the reading went past it, and the
    /// checkpoints after it can still be read.
    past_damage: bool,
}

impl CheckpointReader {
    /// Opens the checkpoints of the audit directory `dir`; a missing file reads as no checkpoints.
    pub fn open(dir: &Path) -> Result<Self, CheckpointFileError> {
        let path = dir.join(CHECKPOINTS_FILE);
        let (reader, len) = match super::open_log_file(&path) {
            Ok(file) => {
                let len =
                    file.metadata().map_err(|source| CheckpointFileError::Io { path: path.clone(), source })?.len();
                (Some(BufReader::new(file.take(len))), len)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, 0),
            Err(source) => return Err(CheckpointFileError::Io { path, source }),
        };
        Ok(Self { path, reader, len, offset: 0, index: 0, payload: Vec::new(), torn: None, past_damage: false })
    }

    /// Whether the file exists.
    pub fn exists(&self) -> bool {
        self.reader.is_some()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next checkpoint; `Ok(None)` at the end (or at a torn last frame).
    pub fn next_checkpoint(&mut self) -> Result<Option<Located>, CheckpointFileError> {
        let (offset, index) = (self.offset, self.index);
        let remaining = self.len - offset;
        let Some(reader) = self.reader.as_mut() else { return Ok(None) };
        if remaining == 0 {
            return Ok(None);
        }
        let path = &self.path;
        let io_err = |source| CheckpointFileError::Io { path: path.clone(), source };
        let damaged = |what: String| CheckpointFileError::Damaged { path: path.clone(), offset, index, what };
        self.past_damage = false;
        let frame = read_checkpoint_frame(reader, remaining, &mut self.payload).map_err(io_err)?;
        let frame_len = match frame {
            Frame::Whole(frame_len) => frame_len,
            Frame::Torn => {
                self.torn = Some((offset, remaining));
                self.reader = None;
                return Ok(None);
            }
            Frame::Bad(what) => return Err(damaged(what)),
            // Its length is whole: the frames after it are where they were.
            Frame::Corrupt(what, frame_len) => {
                self.offset += frame_len;
                self.index += 1;
                self.past_damage = true;
                return Err(damaged(what));
            }
        };
        self.offset += frame_len;
        self.index += 1;
        let checkpoint = Checkpoint::decode(self.payload.as_slice()).map_err(|e| {
            self.past_damage = true;
            damaged(format!("does not decode: {e}"))
        })?;
        Ok(Some(Located { index, offset, checkpoint }))
    }

    /// The stored bytes of the checkpoint returned last.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// A torn last frame met: its offset and length in bytes.
    pub fn torn(&self) -> Option<(u64, u64)> {
        self.torn
    }

    /// Whether the error just returned was a damaged frame the reading went past, so that the
    /// checkpoints after it may still be read.
    pub fn past_damage(&self) -> bool {
        self.past_damage
    }

    /// A reader of no checkpoints, for a file that could not be opened.
    fn empty(dir: &Path) -> Self {
        Self {
            path: dir.join(CHECKPOINTS_FILE),
            reader: None,
            len: 0,
            offset: 0,
            index: 0,
            payload: Vec::new(),
            torn: None,
            past_damage: false,
        }
    }
}

enum Frame {
    /// A whole frame of this many bytes, its payload read and its CRC right.
    Whole(u64),
    /// What a crash while appending the last frame leaves: a cut-short frame, or a last frame
    /// (or zeros) failing its checksum.
    Torn,
    /// Damage that leaves the frames after it unplaced.
    Bad(String),
    /// A frame of this many bytes whose checksum fails: damaged itself, the ones after it placed.
    Corrupt(String, u64),
}

/// Reads one checkpoint frame from `reader`, which has `remaining` bytes left.
fn read_checkpoint_frame(reader: &mut impl io::Read, remaining: u64, payload: &mut Vec<u8>) -> io::Result<Frame> {
    if remaining < 8 {
        return Ok(Frame::Torn);
    }
    let mut head = [0u8; 8];
    reader.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_CHECKPOINT_LEN {
        // Zeros to the end are what a crash can leave after the last frame; look at up to 1 MiB.
        if head == [0; 8] && remaining <= 8 + (1 << 20) {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            if rest.iter().all(|b| *b == 0) {
                return Ok(Frame::Torn);
            }
        }
        return Ok(Frame::Bad(format!("frame length {len} is out of range (1..={MAX_CHECKPOINT_LEN})")));
    }
    let frame_len = 8 + u64::from(len);
    if frame_len > remaining {
        return Ok(Frame::Torn);
    }
    payload.resize(len as usize, 0);
    reader.read_exact(payload)?;
    let computed = crc32c::crc32c(payload);
    if computed != crc {
        if frame_len == remaining {
            return Ok(Frame::Torn);
        }
        return Ok(Frame::Corrupt(
            format!("checksum mismatch (stored {crc:08x}, computed {computed:08x}); the file was changed or damaged"),
            frame_len,
        ));
    }
    Ok(Frame::Whole(frame_len))
}

/// A signer certificate as the verifier found it.
#[derive(Debug, Clone)]
struct Signer {
    file: String,
    der: Vec<u8>,
}

/// The signer certificates of an audit directory, loaded once each, by key hash.
#[derive(Debug)]
struct Signers<'a> {
    dir: PathBuf,
    ca: Option<&'a [u8]>,
    loaded: HashMap<Vec<u8>, Result<Signer, String>>,
}

impl<'a> Signers<'a> {
    fn new(dir: &Path, ca: Option<&'a [u8]>) -> Self {
        Self { dir: dir.to_owned(), ca, loaded: HashMap::new() }
    }

    fn get(&mut self, key_sha256: &[u8]) -> Result<Signer, String> {
        if let Some(found) = self.loaded.get(key_sha256) {
            return found.clone();
        }
        let file = signer_file_name(key_sha256);
        let loaded = load_signer(&self.dir.join(&file), &file);
        self.loaded.insert(key_sha256.to_vec(), loaded.clone());
        loaded
    }

    /// Checks the checkpoint's signature against its signer's certificate, the certificate's
    /// identity against the checkpoint's gateway, and with a CA, that the CA issued it and it was
    /// valid when the checkpoint was made.
    ///
    /// The error is a whole sentence, to follow where the checkpoint is: that the signature does
    /// not verify (or cannot be checked) only when it does not; a certificate that is not the
    /// gateway's, or that the CA did not issue, is said as such.
    fn check(&mut self, cp: &Checkpoint) -> Result<(), String> {
        let signer = self.get(&cp.key_sha256).map_err(|e| format!("the signature cannot be checked: {e}"))?;
        verify_checkpoint(cp, &signer.der).map_err(|e| format!("{e} (certificate {})", signer.file))?;
        check_gateway_certificate(&signer.der, &cp.gateway, self.ca, cp.time_unix_nanos).map_err(|problem| {
            problem.describe("it names", &cp.gateway, &format!("its signer certificate {}", signer.file))
        })
    }
}

fn load_signer(path: &Path, file: &str) -> Result<Signer, String> {
    if !path.exists() {
        return Err(format!("its signer certificate {file} is not in the directory"));
    }
    let der = read_certificates(path)
        .map_err(|e| format!("its signer certificate {file} cannot be read: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{file} holds no certificate"))?
        .to_vec();
    Ok(Signer { file: file.to_owned(), der })
}

/// The splpd identity (`ID/PEMDA/1602/gw1`) a certificate carries, if any.
pub(crate) fn certificate_identity(der: &[u8]) -> Option<String> {
    certificate_identity_of(der).map(|id| id.id_string())
}

fn certificate_identity_of(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    splpd_certs::profile::identity_of(&cert).ok()
}

/// Why a certificate may not sign for a gateway (a checkpoint, a manifest), as
/// [`check_gateway_certificate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CertificateProblem {
    /// It is not the gateway's own server certificate: what it is instead, to follow the
    /// certificate's name ("is gateway ID/PEMDA/1602/gw2's", "carries no splpd identity").
    NotTheGateways(String),
    /// It names the gateway, but the CA check failed: how, to follow "it" ("was not issued by
    /// the given CA", "was not valid at …").
    Ca(String),
    /// It names the gateway, but was not valid at the time asked about (an export's: now): when,
    /// to follow "it".
    NotValid(String),
}

impl CertificateProblem {
    /// The problem as one sentence, the same wherever a signer certificate is checked:
    /// `names` says what names the gateway, with its verb ("it names", "the checkpoint names"),
    /// and `cert` the certificate ("its signer certificate signer-….crt"). Each reads true: a
    /// certificate of another identity is not said to fail the CA, nor one that failed only the
    /// CA to be another's, and neither to have a signature that does not verify.
    pub(crate) fn describe(&self, names: &str, gateway: &str, cert: &str) -> String {
        match self {
            Self::NotTheGateways(what) => {
                format!(
                    "{names} gateway {gateway}, but {cert} {what}; expected gateway {gateway}'s own server certificate"
                )
            }
            // Anyone can make a certificate that names the gateway: the CA's signature is what
            // would make it the gateway's, so it is not called the gateway's own before that.
            Self::Ca(what) if what.starts_with("was not issued") => format!(
                "the signature verifies, and {cert} names gateway {gateway}, but it {what}: anyone can make a \
                 certificate that names a gateway, so this does not show that gateway {gateway} signed (unless --ca is \
                 not the region's CA certificate: check that it is)"
            ),
            Self::Ca(what) => format!(
                "the signature verifies, and {cert} names gateway {gateway}, but it {what}, so it does not show that \
                 gateway {gateway} signed then"
            ),
            Self::NotValid(what) => format!("{cert} names gateway {gateway}, but it {what}"),
        }
    }
}

/// Checks that the certificate `der` may sign for gateway `gateway` (a checkpoint, a manifest):
/// when it carries a splpd identity, it must be that gateway's server certificate; with `ca`
/// (DER), it must also carry that identity, have been issued by the CA, and have been valid at
/// `at_unix_nanos`. [`CertificateProblem::describe`] words what is wrong.
pub(crate) fn check_gateway_certificate(
    der: &[u8],
    gateway: &str,
    ca: Option<&[u8]>,
    at_unix_nanos: i64,
) -> Result<(), CertificateProblem> {
    match certificate_identity_of(der) {
        Some(Identity::Server(id)) if id.to_string() == gateway => {}
        Some(Identity::Server(id)) => return Err(CertificateProblem::NotTheGateways(format!("is gateway {id}'s"))),
        Some(other) => {
            return Err(CertificateProblem::NotTheGateways(format!("is the certificate of {other}, not of a gateway")));
        }
        None if ca.is_some() => {
            return Err(CertificateProblem::NotTheGateways("carries no splpd identity".to_owned()));
        }
        None => {}
    }
    if let Some(ca) = ca {
        check_issued_by(der, ca, at_unix_nanos).map_err(CertificateProblem::Ca)?;
    }
    Ok(())
}

/// Checks that the certificate `der` is gateway `gateway`'s own server certificate (it must
/// carry that identity, with or without a CA) and is valid at `at_unix_nanos`: what an export
/// requires of the certificate it ships for the manifest's key. The error follows the
/// certificate's name.
pub(crate) fn check_own_certificate(der: &[u8], gateway: &str, at_unix_nanos: i64) -> Result<(), CertificateProblem> {
    if certificate_identity_of(der).is_none() {
        return Err(CertificateProblem::NotTheGateways("carries no splpd identity".to_owned()));
    }
    check_gateway_certificate(der, gateway, None, at_unix_nanos)?;
    check_valid_at(der, at_unix_nanos).map_err(CertificateProblem::NotValid)
}

/// Checks that the certificate `der` was valid at `at_unix_nanos`.
fn check_valid_at(der: &[u8], at_unix_nanos: i64) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("cannot be parsed: {e}"))?;
    let secs = at_unix_nanos.div_euclid(1_000_000_000);
    let at = x509_parser::time::ASN1Time::from_timestamp(secs).map_err(|e| format!("bad time: {e}"))?;
    if !cert.validity().is_valid_at(at) {
        return Err(format!(
            "was not valid at {} (valid {} to {})",
            rfc3339_nanos(at_unix_nanos).unwrap_or_default(),
            cert.validity().not_before,
            cert.validity().not_after
        ));
    }
    Ok(())
}

/// Checks that `ca_der` issued `cert_der` (its signature) and that the certificate was valid at
/// `at_unix_nanos`.
pub(crate) fn check_issued_by(cert_der: &[u8], ca_der: &[u8], at_unix_nanos: i64) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| format!("cannot be parsed: {e}"))?;
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der)
        .map_err(|e| format!("could not be checked: the given CA cannot be parsed: {e}"))?;
    cert.verify_signature(Some(ca.public_key())).map_err(|_| "was not issued by the given CA".to_owned())?;
    check_valid_at(cert_der, at_unix_nanos)
}

/// A directory given as an audit log holds none: no segment file and no `checkpoints.log`.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: no audit log here (no segment files and no {CHECKPOINTS_FILE}); give the gateway's audit directory, \
     the `dir` of its configuration's [audit] section",
    .0.display()
)]
pub struct NotALog(pub PathBuf);

/// Refuses a directory that holds no audit log, so that a command given the wrong folder says so
/// instead of reporting an empty log. A gateway makes its first segment when it opens the log,
/// so even a log without records has one.
pub fn ensure_log(dir: &Path) -> Result<(), VerifyError> {
    let segments = listed(dir)?;
    if segments.is_empty() && !dir.join(CHECKPOINTS_FILE).exists() {
        return Err(NotALog(dir.to_owned()).into());
    }
    Ok(())
}

/// The segments of the log in `dir`; a file given for the directory (an export archive, most
/// likely) is told as such.
fn listed(dir: &Path) -> Result<Vec<(u64, PathBuf)>, VerifyError> {
    if dir.is_file() {
        return Err(VerifyError::File(dir.to_owned()));
    }
    Ok(list_segments(dir).map_err(|e| SegmentError::Io { path: dir.to_owned(), error: e })?)
}

/// Why a directory could not be verified at all (as opposed to a log that fails verification,
/// which is a [`VerifyReport`] with problems).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The directory holds no audit log.
    #[error(transparent)]
    NotALog(#[from] NotALog),
    /// The directory or a file could not be read.
    #[error(transparent)]
    Segments(#[from] SegmentError),
    /// A file was given where the log's directory belongs.
    #[error(
        "{shown} is a file, not an audit log's directory; an export archive is checked once extracted into an empty \
         directory: mkdir x && tar -xf {shown} -C x && splpd audit verify x",
        shown = .0.display()
    )]
    File(PathBuf),
}

/// What [`verify_log`] found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// The first record of the log: 0, or where an exported archive starts.
    pub first_seq: u64,
    /// Records read and hashed: the size of the recomputed tree (counting the records before
    /// `first_seq` that an archive stands for by its manifest's frontier).
    pub tree_size: u64,
    /// The recomputed root over `tree_size` records.
    pub root: Hash,
    /// Records read in this run.
    pub records_read: u64,
    /// Bytes of frames read.
    pub bytes: u64,
    /// Segment files in the directory.
    pub segments: usize,
    /// Checkpoints read.
    pub checkpoints: u64,
    /// Checkpoints whose root matched the recomputed tree at their size.
    pub checkpoints_matched: u64,
    /// The last checkpoint of the file.
    pub latest: Option<Located>,
    /// What is wrong, each with where; empty when the log verifies.
    pub problems: Vec<String>,
    /// Problems beyond the first [`MAX_PROBLEMS`], only counted.
    pub problems_omitted: u64,
    /// What is worth knowing but not wrong (a torn tail after the last checkpoint).
    pub warnings: Vec<String>,
    /// Worth knowing, not wrong: records removed by retention, and which exports hold them.
    pub notes: Vec<String>,
    /// The manifest, when the directory is an extracted export archive.
    pub manifest: Option<Manifest>,
    /// The observer had enough, and the log was read only up to a checkpoint that covers what
    /// it was shown ([`Reading::Enough`]).
    pub stopped_early: bool,
    /// The first of the records past the largest checkpoint, when there are any: read and
    /// hashed, but not proven by any signature yet.
    pub unproven_from: Option<u64>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl VerifyReport {
    /// Whether the log verifies.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Records read per second.
    pub fn records_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.records_read as f64 / secs } else { 0.0 }
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        } else {
            self.problems_omitted += 1;
        }
    }
}

/// The checkpoint a checkpoint is compared with: the one before it in the file.
#[derive(Debug, Clone)]
struct Previous {
    index: u64,
    size: u64,
    time: i64,
}

/// One run of [`verify_log`]: the tree and the checkpoint that the records must reach next.
struct Run<'a> {
    report: VerifyReport,
    signers: Signers<'a>,
    checkpoints: CheckpointReader,
    /// Signed, in order, not yet reached by the tree.
    pending: Option<Located>,
    previous: Option<Previous>,
    gateway: Option<String>,
    /// The last checkpoint whose root matched: its index and size.
    last_match: Option<(u64, u64)>,
    /// The first checkpoint whose root did not match.
    first_mismatch: Option<u64>,
    later_mismatches: u64,
    checkpoint_file_failed: bool,
    /// The most records any checkpoint read claims to cover, signed or not: whether the records
    /// here are under a checkpoint at all.
    largest: Option<u64>,
    /// Signature problems said once each (a wrong --ca fails every checkpoint alike): the
    /// problem, the first checkpoint that had it, how many more did, and the last of them.
    signer_problems: Vec<SignerProblem>,
}

/// A checkpoint signature problem, and the checkpoints that had it after the first.
struct SignerProblem {
    text: String,
    first: u64,
    more: u64,
    last: u64,
}

impl Run<'_> {
    /// Reads checkpoints until one the tree (now of `tree_size` records) has not passed yet,
    /// checking each one's signature and order on the way.
    fn next_pending(&mut self, tree_size: u64) {
        self.pending = None;
        while !self.checkpoint_file_failed {
            let located = match self.checkpoints.next_checkpoint() {
                Ok(Some(located)) => located,
                Ok(None) => return,
                // A damaged checkpoint whose length is whole: the ones after it are still checked.
                Err(e) if self.checkpoints.past_damage() => {
                    self.report.problem(e.to_string());
                    continue;
                }
                Err(e) => {
                    self.report.problem(e.to_string());
                    self.checkpoint_file_failed = true;
                    return;
                }
            };
            self.report.checkpoints += 1;
            self.report.latest = Some(located.clone());
            self.largest = self.largest.max(Some(located.checkpoint.tree_size));
            let cp = &located.checkpoint;
            let at = checkpoint_place(self.checkpoints.path(), &located);
            if let Err(e) = self.signers.check(cp) {
                match self.signer_problems.iter_mut().find(|p| p.text == e) {
                    Some(seen) => {
                        seen.more += 1;
                        seen.last = located.index;
                    }
                    None => {
                        self.report.problem(format!("{at}: {e}"));
                        self.signer_problems.push(SignerProblem { text: e, first: located.index, more: 0, last: 0 });
                    }
                }
                continue;
            }
            let gateway = self.gateway.get_or_insert_with(|| cp.gateway.clone());
            if *gateway != cp.gateway {
                let text =
                    format!("{at}: it is gateway {}'s checkpoint, the log's earlier ones are {gateway}'s", cp.gateway);
                self.report.problem(text);
            }
            let previous =
                self.previous.replace(Previous { index: located.index, size: cp.tree_size, time: cp.time_unix_nanos });
            if let Some(p) = &previous {
                if cp.tree_size < p.size {
                    self.report.problem(format!(
                        "{at}: the log goes backwards: it covers {} records, checkpoint {} before it {}",
                        cp.tree_size, p.index, p.size
                    ));
                    // Its root cannot be compared any more: the tree is past it.
                    self.previous = previous;
                    continue;
                }
                if cp.time_unix_nanos < p.time {
                    self.report.problem(format!(
                        "{at}: time goes backwards: signed at {}, checkpoint {} before it at {}",
                        time_text(cp.time_unix_nanos),
                        p.index,
                        time_text(p.time)
                    ));
                }
            }
            if cp.tree_size < self.report.first_seq {
                // An archive's checkpoint from before its first record: only its signature counts.
                continue;
            }
            if cp.tree_size >= tree_size {
                self.pending = Some(located);
                return;
            }
            self.report.problem(format!(
                "{at}: covers {} records, but the tree was already past it (records out of order?)",
                cp.tree_size
            ));
        }
    }

    /// Compares every pending checkpoint the tree has reached with the tree's root.
    fn check_reached(&mut self, tree: &Tree) {
        while let Some(located) = self.pending.take() {
            if located.checkpoint.tree_size != tree.size() {
                self.pending = Some(located);
                return;
            }
            let root = tree.root();
            if located.checkpoint.root_hash == root {
                self.report.checkpoints_matched += 1;
                self.last_match = Some((located.index, located.checkpoint.tree_size));
            } else if self.first_mismatch.is_none() {
                self.first_mismatch = Some(located.index);
                let (since, after) = match self.last_match {
                    Some((index, size)) => (size, format!("after checkpoint {index}, which matches")),
                    None if self.report.first_seq > 0 => {
                        (self.report.first_seq, "the archive's first record; no earlier checkpoint matches".to_owned())
                    }
                    None => (0, "no earlier checkpoint matches".to_owned()),
                };
                self.report.problem(format!(
                    "{}: covers {} records, but its root {} is not the root of the log's first {} records ({}): \
                     records {since}..{} ({after}) were altered, reordered, removed or inserted",
                    checkpoint_place(self.checkpoints.path(), &located),
                    located.checkpoint.tree_size,
                    hex::encode(&located.checkpoint.root_hash),
                    located.checkpoint.tree_size,
                    hex::encode(root),
                    located.checkpoint.tree_size,
                ));
            } else {
                self.later_mismatches += 1;
            }
            self.next_pending(tree.size());
        }
    }
}

fn checkpoint_place(path: &Path, located: &Located) -> String {
    format!("{}: byte {}, checkpoint {}", path.display(), located.offset, located.index)
}

pub(crate) fn time_text(nanos: i64) -> String {
    rfc3339_nanos(nanos).unwrap_or_else(|| nanos.to_string())
}

/// What [`verify_log`] shows each record to: its number, its stored bytes, the record (`None`
/// when it does not decode) and the tree before it. It answers whether to read on.
pub type RecordObserver<'a> = dyn FnMut(u64, &[u8], Option<&ExchangeRecord>, &Tree) -> Reading + 'a;

/// An observer's answer to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Read and check the whole log.
    On,
    /// The observer needs no more records: the log is read on only until a signed checkpoint
    /// that matches covers this one (so that what the observer was shown is checked), and the
    /// rest is left unread; the report says where it stopped.
    Enough,
}

/// Verifies the audit log in `dir`: every segment (header, frames, checksums, sequence), every
/// record decodes, the Merkle tree over all records, and every checkpoint of `checkpoints.log`
/// (its signature against `signer-<key sha256>.crt` in `dir`, its root against the tree at its
/// size, its order). With `ca`, each signer certificate must also have been issued by that CA and
/// valid when it signed. An extracted export archive (a `MANIFEST.json` in `dir`) is checked
/// against its signed manifest too, and may start past record 0.
///
/// `observer` sees each record before it joins the tree: its number, its stored bytes, the record
/// (`None` when it does not decode) and the tree as it stands (for [`export`], which needs the
/// tree's frontier at a record; and for [`query`], which shows records as it checks them).
///
/// Problems go into the report; `Err` only when `dir` holds no log at all or cannot be listed.
pub fn verify_log(
    dir: &Path,
    ca: Option<&[u8]>,
    observer: &mut RecordObserver<'_>,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let mut report = VerifyReport::default();
    // Checkpoints first: every checkpoint read is then over records already in the segments.
    let checkpoints = match CheckpointReader::open(dir) {
        Ok(reader) => reader,
        Err(e) => {
            report.problem(e.to_string());
            CheckpointReader::empty(dir)
        }
    };
    let segment_names = listed(dir)?;
    report.segments = segment_names.len();
    if segment_names.is_empty() && !checkpoints.exists() {
        return Err(NotALog(dir.to_owned()).into());
    }

    let mut tree = Tree::new();
    if !dir.join(MANIFEST_FILE).exists() {
        // Part of an archive: what is left cannot be told from a live log.
        let here = [MANIFEST_SIG_FILE, EXPORT_MARKER_FILE].into_iter().find(|f| dir.join(f).exists());
        if let Some(here) = here {
            report.problem(format!(
                "{}: {here} is here but {MANIFEST_FILE} is missing: an export archive extracted in part, or its \
                 manifest deleted; extract the whole archive again into an empty directory",
                dir.display()
            ));
        }
    }
    if dir.join(MANIFEST_FILE).exists() {
        match archive::check_manifest(dir, &segment_names, ca) {
            Ok((manifest, problems)) => {
                for p in problems {
                    report.problem(p);
                }
                match Tree::from_frontier(manifest.start.tree_size, manifest.start_frontier()) {
                    Ok(start) => {
                        report.first_seq = start.size();
                        tree = start;
                    }
                    Err(e) => report.problem(format!("{MANIFEST_FILE}: the start frontier is malformed: {e}")),
                }
                report.manifest = Some(manifest);
            }
            Err(e) => report.problem(format!("{MANIFEST_FILE}: {e}")),
        }
    } else {
        match read_base(dir) {
            Ok(None) => {}
            Ok(Some(base)) => {
                match base
                    .frontier_hashes()
                    .and_then(|f| Tree::from_frontier(base.first_seq, f).map_err(|e| e.to_string()))
                {
                    Ok(start) => {
                        report.first_seq = start.size();
                        tree = start;
                    }
                    Err(e) => report.problem(format!("{BASE_FILE}: the frontier is malformed: {e}")),
                }
                report.notes.push(format!(
                    "records 0..{} were removed by retention (last at {}); held by {}",
                    base.first_seq,
                    base.removed_at,
                    if base.held_by.is_empty() { "no export on record".to_owned() } else { base.held_by.join(", ") }
                ));
            }
            Err(e) => report.problem(format!("{BASE_FILE}: {e}")),
        }
    }

    let mut run = Run {
        report,
        signers: Signers::new(dir, ca),
        checkpoints,
        pending: None,
        previous: None,
        gateway: None,
        last_match: None,
        first_mismatch: None,
        later_mismatches: 0,
        checkpoint_file_failed: false,
        largest: None,
        signer_problems: Vec::new(),
    };
    run.next_pending(tree.size());
    run.check_reached(&tree);

    let mut ended = None;
    let mut damaged = false;
    // The record the observer had enough at; and, when the reading stopped there, the
    // checkpoint that covers it (`None`: one before it does not match).
    let mut enough_at = None;
    let mut stopped: Option<Option<(u64, u64)>> = None;
    let mut record = ExchangeRecord::default();
    match SegmentReader::open_from(dir, tree.size()) {
        Err(e) => {
            run.report.problem(e.to_string());
            damaged = true;
        }
        Ok(mut records) => loop {
            match records.next_record() {
                Ok(Some((seq, payload))) => {
                    record.clear();
                    let decoded = match record.merge(payload) {
                        Ok(()) => Some(&record),
                        Err(e) => {
                            // Intact frame, but not a record: written so, or forged with a fresh CRC.
                            run.report.problem(format!("record {seq}: the frame is intact but does not decode: {e}"));
                            None
                        }
                    };
                    if enough_at.is_none() && observer(seq, payload, decoded, &tree) == Reading::Enough {
                        enough_at = Some(seq);
                    }
                    tree.push(leaf_hash(payload));
                    run.report.records_read += 1;
                    run.report.bytes += (payload.len() + 8) as u64;
                    run.check_reached(&tree);
                    // Covered by a checkpoint that matches, or shown not to be by one that does not.
                    if let Some(last) = enough_at
                        && (run.last_match.is_some_and(|(_, size)| size > last) || run.first_mismatch.is_some())
                    {
                        stopped = Some(run.last_match.filter(|(_, size)| *size > last));
                        break;
                    }
                }
                Ok(None) => break,
                // An archive holds only whole frames the exporter checked: a torn one is damage.
                Err(e) if e.is_torn_tail() && run.report.manifest.is_none() => {
                    ended = Some(match &e {
                        SegmentError::Damaged { path, offset, .. } => {
                            format!("a torn tail at {} byte {offset}", path.display())
                        }
                        SegmentError::Io { .. } => "a torn tail".to_owned(),
                    });
                    // Under a checkpoint it is no crash's leftover but records lost, which the
                    // checkpoint's problem below says; only past every checkpoint is it benign.
                    let covered = run.pending.as_ref().is_some_and(|p| p.checkpoint.tree_size > tree.size());
                    if !covered {
                        run.report.warnings.push(format!(
                            "{e}: a write cut short by a crash or still in progress; the gateway cuts it off when it \
                             opens the log"
                        ));
                    }
                    break;
                }
                Err(e) => {
                    run.report.problem(e.to_string());
                    damaged = true;
                    break;
                }
            }
        },
    }

    if let Some(covered) = stopped {
        // What follows looks at the log's end, which was not read.
        run.report.notes.push(match covered {
            Some((index, size)) => {
                format!(
                    "read up to record {}, which checkpoint {index} (of {size} records) covers, and no further",
                    size - 1
                )
            }
            None => format!(
                "read up to record {}, past a checkpoint that does not match, and no further; `splpd audit verify` \
                 reads the whole log",
                tree.size().saturating_sub(1)
            ),
        });
        run.report.stopped_early = true;
        let mut report = run.report;
        report.tree_size = tree.size();
        report.root = tree.root();
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    // Checkpoints the records never reached.
    if let Some(located) = run.pending.take() {
        let why = if damaged {
            "; the records after the damage above cannot be read".to_owned()
        } else if let Some(ended) = &ended {
            format!("; the log ends with {ended}")
        } else {
            ": records were deleted or the log was truncated".to_owned()
        };
        let matches = match run.last_match {
            Some((index, size)) => format!("it matches checkpoint {index}, so records {size}.. are affected"),
            None => "no earlier checkpoint matches".to_owned(),
        };
        run.report.problem(format!(
            "{}: covers {} records but the log holds {}{why} ({matches})",
            checkpoint_place(run.checkpoints.path(), &located),
            located.checkpoint.tree_size,
            tree.size()
        ));
        let mut later = 0u64;
        let mut max = located.checkpoint.tree_size;
        loop {
            run.next_pending(tree.size());
            let Some(next) = run.pending.take() else { break };
            later += 1;
            max = max.max(next.checkpoint.tree_size);
        }
        if later > 0 {
            run.report.problem(format!(
                "{later} later checkpoint(s), up to {max} records, cannot be checked against the log either"
            ));
        }
    }
    for seen in std::mem::take(&mut run.signer_problems).into_iter().filter(|p| p.more > 0) {
        let which = match seen.more {
            1 => format!("checkpoint {} has", seen.last),
            n => format!("{n} later checkpoints, up to checkpoint {}, have", seen.last),
        };
        run.report.problem(format!("{which} the same signature problem as checkpoint {}", seen.first));
    }
    if run.later_mismatches > 0 {
        let first = run.first_mismatch.unwrap_or_default();
        run.report.problem(format!(
            "{} checkpoint(s) after checkpoint {first} do not match either (their trees include the records above)",
            run.later_mismatches
        ));
    }
    if let Some((offset, bytes)) = run.checkpoints.torn() {
        run.report.warnings.push(format!(
            "{}: byte {offset}: a torn last checkpoint of {bytes} bytes (a crash while writing it, or the file cut \
             short) was ignored",
            run.checkpoints.path().display()
        ));
    }
    let first_seq = run.report.first_seq;
    let records = tree.size() - first_seq;
    if records > 0 && run.largest.is_none_or(|size| size <= first_seq) {
        let text = uncovered(dir, &run, records, tree.size());
        run.report.problem(text);
    } else if run.report.checkpoints == 0 && run.report.problems.is_empty() {
        run.report.warnings.push("the log has no records and no checkpoint yet".to_owned());
    } else if let Some(largest) = run.largest
        && largest < tree.size()
    {
        // The largest, not the last: a checkpoint replayed at the end of the file (a problem of
        // its own) does not uncover the records a larger one before it covers.
        run.report.unproven_from = Some(largest);
        run.report.warnings.push(format!(
            "records {}..{} are not covered by a checkpoint yet: as expected while the gateway runs or after a crash \
             (its next start signs them), but a gateway signs a last checkpoint when it stops, so on a log stopped \
             cleanly it means checkpoints were removed: compare with a checkpoint you kept (`splpd audit consistency \
             DIR --kept FILE`)",
            largest,
            tree.size()
        ));
    }
    let mut report = run.report;
    report.tree_size = tree.size();
    report.root = tree.root();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// What is wrong with a folder none of whose `records` records (up to `end`) any checkpoint
/// covers, worded for what the folder is: an extracted archive, or a log (trimmed by retention
/// or not).
fn uncovered(dir: &Path, run: &Run<'_>, records: u64, end: u64) -> String {
    let first = run.report.first_seq;
    let file = run.checkpoints.path().display();
    let archive = run.report.manifest.is_some() || dir.join(MANIFEST_FILE).exists();
    let none = format!(
        "none of the {}'s {records} record(s) ({}) is covered by a signed checkpoint, so nothing in it is proven",
        if archive { "archive" } else { "log" },
        if records == 1 { format!("record {first}") } else { format!("records {first}..{end}") }
    );
    let found = match run.largest {
        Some(largest) => format!(
            "its {} checkpoint(s) cover only records before record {first} (at most {largest} records)",
            run.report.checkpoints
        ),
        None => format!("{CHECKPOINTS_FILE} is missing, empty or was emptied"),
    };
    if archive {
        return format!(
            "{file}: {none}: {found}. An export holds the checkpoints over the records it holds, so this archive was \
             made of records no checkpoint covered yet (which splpd audit export refuses now), or its \
             {CHECKPOINTS_FILE} was replaced: export these records again from the gateway's log, in a range that \
             ends at or after one of its checkpoints"
        );
    }
    format!(
        "{file}: {none}: {found}. A running gateway signs a checkpoint when it opens the log and within one and a \
         half checkpoint_intervals (1 s by default) of its last records, so verify a brand-new log again shortly"
    )
}

/// A checkpoint's fields as text, for messages and summaries.
pub fn describe_checkpoint(cp: &Checkpoint) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "{} records, root {}, signed {} by {} ({}, key {})",
        cp.tree_size,
        hex::encode(&cp.root_hash),
        time_text(cp.time_unix_nanos),
        cp.gateway,
        cp.signature_algorithm,
        hex::encode(&cp.key_sha256)
    );
    text
}

/// SHA-256 of a signer certificate's public key: the hash checkpoints name it by.
pub(crate) fn certificate_key_sha256(der: &[u8]) -> Result<[u8; 32], String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("cannot be parsed: {e}"))?;
    Ok(sha256(cert.public_key().raw))
}

/// The certificates of a PEM or DER file, as PEM text.
pub(crate) fn certificates_pem(ders: &[impl AsRef<[u8]>]) -> String {
    use base64::Engine as _;
    let mut pem = String::new();
    for der in ders {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

#[cfg(test)]
mod tests;

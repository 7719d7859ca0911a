//! Inclusion proofs an auditor can check offline: one record, its place in the Merkle tree, the
//! signed checkpoint whose root it leads to, and the certificate that signed the checkpoint, all
//! in one JSON document.
//!
//! Made in one streaming pass with O(log n) memory: the audit path's subtrees left of the leaf
//! are exactly the tree's frontier when the leaf is reached (RFC 6962 splits at powers of two, so
//! they are the perfect subtrees the first `index` leaves decompose into), and those right of it
//! are hashed as their leaves stream past.

use std::path::Path;

use base64::Engine as _;
use prost::Message as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};

use super::json::{RecordJson, rfc3339_nanos};
use super::{
    CheckpointReader, Located, Signers, certificate_identity, certificates_pem, check_gateway_certificate, ensure_log,
};
use crate::audit::ExchangeRecord;
use crate::audit::checkpoint::{Checkpoint, verify_checkpoint};
use crate::audit::merkle::{Hash, Tree, leaf_hash, verify_inclusion};
use crate::audit::segment::SegmentReader;
use splpd_proto::v1::RecordKind;

/// The `format` of a proof document.
pub const INCLUSION_PROOF_FORMAT: &str = "splpd-inclusion-proof/v1";

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why a proof could not be made, or does not hold.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// No record has the exchange id (or none that `--client` and `--record` pick).
    #[error("no record with exchange id {exchange_id} in the log ({scanned} records read){removed}{others}")]
    NotFound {
        /// The id looked for.
        exchange_id: String,
        /// Records read.
        scanned: u64,
        /// When retention removed the log's first records: where they are, in words.
        removed: String,
        /// Records that carry the id but were not picked, in words; empty when none.
        others: String,
    },
    /// The record is newer than every checkpoint.
    #[error(
        "exchange {exchange_id} is record {seq}, but the latest checkpoint covers only {covered} records: \
         wait for the next checkpoint and try again"
    )]
    NotCovered {
        /// The id.
        exchange_id: String,
        /// Its record's sequence number.
        seq: u64,
        /// The latest checkpoint's size.
        covered: u64,
    },
    /// Several exchange records carry the id: callers choose their ids, and two may choose one.
    #[error(
        "exchange id {exchange_id} is carried by {carried} records ({}{}): callers choose their X-Road-Id, so \
         several exchanges may share one; {hint}",
        .records.iter().map(|(seq, client)| format!("record {seq}, client {client}")).collect::<Vec<_>>().join("; "),
        if *carried > .records.len() { "; …" } else { "" }
    )]
    Ambiguous {
        /// The id.
        exchange_id: String,
        /// How many records carry it.
        carried: usize,
        /// The first of them: sequence number and client.
        records: Vec<(u64, String)>,
        /// What to give to pick one.
        hint: &'static str,
    },
    /// The log cannot back a proof: no checkpoint, damage, a checkpoint that does not match.
    #[error("{0}")]
    Log(String),
    /// A proof document does not hold.
    #[error("{0}")]
    Invalid(String),
}

/// A checkpoint as JSON: every field, hashes in hex, the signature in base64, the time also as
/// RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointJson {
    /// Records covered.
    pub tree_size: u64,
    /// The Merkle root, hex.
    pub root_hash: String,
    /// When it was signed, RFC 3339 (not signed itself: it must agree with `time_unix_nanos`).
    pub time: Option<String>,
    /// When it was signed, nanoseconds since the Unix epoch (signed).
    pub time_unix_nanos: i64,
    /// The gateway.
    pub gateway: String,
    /// The signature algorithm.
    pub signature_algorithm: String,
    /// SHA-256 of the signing key's SubjectPublicKeyInfo, hex.
    pub key_sha256: String,
    /// The signature, base64.
    pub signature: String,
}

impl From<&Checkpoint> for CheckpointJson {
    fn from(cp: &Checkpoint) -> Self {
        Self {
            tree_size: cp.tree_size,
            root_hash: hex::encode(&cp.root_hash),
            time: rfc3339_nanos(cp.time_unix_nanos),
            time_unix_nanos: cp.time_unix_nanos,
            gateway: cp.gateway.clone(),
            signature_algorithm: cp.signature_algorithm.clone(),
            key_sha256: hex::encode(&cp.key_sha256),
            signature: BASE64.encode(&cp.signature),
        }
    }
}

impl CheckpointJson {
    /// The checkpoint, once its fields decode; the RFC 3339 time (not signed) must agree with
    /// the signed nanoseconds.
    pub fn to_checkpoint(&self) -> Result<Checkpoint, String> {
        if self.time != rfc3339_nanos(self.time_unix_nanos) {
            return Err("the checkpoint's time does not agree with its time_unix_nanos".to_owned());
        }
        Ok(Checkpoint {
            tree_size: self.tree_size,
            root_hash: hex::decode(&self.root_hash).map_err(|e| format!("the checkpoint's root_hash: {e}"))?,
            time_unix_nanos: self.time_unix_nanos,
            gateway: self.gateway.clone(),
            signature: BASE64.decode(&self.signature).map_err(|e| format!("the checkpoint's signature: {e}"))?,
            signature_algorithm: self.signature_algorithm.clone(),
            key_sha256: hex::decode(&self.key_sha256).map_err(|e| format!("the checkpoint's key_sha256: {e}"))?,
        })
    }
}

#[derive(Serialize)]
struct ProofOut<'a> {
    format: &'static str,
    exchange_id: &'a str,
    leaf_index: u64,
    leaf_hash: String,
    record: RecordJson<'a>,
    record_base64: String,
    checkpoint: CheckpointJson,
    audit_path: Vec<String>,
    signer_certificate: String,
}

#[derive(Deserialize)]
struct ProofIn {
    format: String,
    exchange_id: String,
    leaf_index: u64,
    leaf_hash: String,
    record: serde_json::Value,
    record_base64: String,
    checkpoint: CheckpointJson,
    audit_path: Vec<String>,
    signer_certificate: String,
}

/// The subtrees of the audit path of leaf `index` in a tree of `size` leaves, leaf first, as
/// leaf ranges `lo..hi` (RFC 6962 §2.1.1).
fn path_ranges(index: u64, size: u64) -> Vec<(u64, u64)> {
    let (mut lo, mut hi) = (0, size);
    let mut ranges = Vec::new();
    while hi - lo > 1 {
        // The largest power of two smaller than the range.
        let n = hi - lo;
        let mid = lo + (1 << (u64::BITS - 1 - (n - 1).leading_zeros()));
        if index < mid {
            ranges.push((mid, hi));
            hi = mid;
        } else {
            ranges.push((lo, mid));
            lo = mid;
        }
    }
    ranges.reverse();
    ranges
}

/// Computes the audit path of one leaf while the leaves stream past.
struct PathBuilder {
    index: u64,
    /// Leaf-first ranges, with their roots once known.
    ranges: Vec<((u64, u64), Option<Hash>)>,
    /// The right-hand subtree being hashed, by position in `ranges`.
    current: Option<usize>,
    acc: Tree,
}

impl PathBuilder {
    /// Starts at leaf `index` of a tree of `size` leaves; `frontier` is the tree's frontier just
    /// before the leaf (the roots of the left-hand subtrees, left to right).
    fn new(index: u64, size: u64, frontier: &[Hash]) -> Result<Self, String> {
        let mut ranges: Vec<((u64, u64), Option<Hash>)> =
            path_ranges(index, size).into_iter().map(|r| (r, None)).collect();
        let mut left: Vec<usize> = (0..ranges.len()).filter(|&i| ranges[i].0.1 <= index).collect();
        left.sort_unstable_by_key(|&i| ranges[i].0.0);
        if left.len() != frontier.len() {
            return Err(format!("internal error: {} left subtrees, {} frontier hashes", left.len(), frontier.len()));
        }
        for (i, hash) in left.into_iter().zip(frontier) {
            ranges[i].1 = Some(*hash);
        }
        let mut builder = Self { index, ranges, current: None, acc: Tree::new() };
        builder.current = builder.next_right(index + 1);
        Ok(builder)
    }

    fn next_right(&self, lo: u64) -> Option<usize> {
        self.ranges.iter().position(|((l, _), _)| *l == lo)
    }

    /// Leaf `seq` (after the proven one) streams past.
    fn push(&mut self, seq: u64, leaf: Hash) {
        let Some(i) = self.current else { return };
        if seq <= self.index {
            return;
        }
        self.acc.push(leaf);
        let hi = self.ranges[i].0.1;
        if seq + 1 == hi {
            self.ranges[i].1 = Some(self.acc.root());
            self.acc = Tree::new();
            self.current = self.next_right(hi);
        }
    }

    fn finish(self) -> Option<Vec<Hash>> {
        self.ranges.into_iter().map(|(_, hash)| hash).collect()
    }
}

/// Where the records retention removed from the log in `dir` are, for one not found there: empty
/// when none were removed.
pub fn removed_note(dir: &Path) -> String {
    match crate::audit::segment::read_base(dir) {
        Ok(Some(base)) if base.first_seq > 0 => {
            let held = if base.held_by.is_empty() { "no export on record".to_owned() } else { base.held_by.join(", ") };
            format!(
                "; records 0..{} were removed by retention and are held by {held}: extract that archive (tar -xf) and \
                 ask it the same",
                base.first_seq
            )
        }
        _ => String::new(),
    }
}

/// How many of the records carrying an ambiguous exchange id are named.
const AMBIGUOUS_LISTED: usize = 10;

/// Which of the records carrying an exchange id to prove: the one of this client, or this
/// record; with neither, the id must be carried by one record alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pick<'a> {
    /// The client whose exchange it is.
    pub client: Option<&'a str>,
    /// The record's sequence number.
    pub record: Option<u64>,
}

/// Makes the inclusion proof of the exchange record with `exchange_id` (the one `pick` picks) in
/// the log in `dir`, against the latest checkpoint, as a JSON document (see
/// `docs/audit-log.md`). Several records carrying the id, picked alike, are refused, and named.
///
/// The latest checkpoint's signature is checked, and so is its root against the records, so
/// that a damaged or altered log yields an error rather than a proof that fails later.
pub fn make_proof(dir: &Path, exchange_id: &str, pick: Pick<'_>) -> Result<(String, u64, Checkpoint), ProofError> {
    ensure_log(dir).map_err(|e| ProofError::Log(e.to_string()))?;
    let latest = latest_checkpoint(dir)?;
    let cp = &latest.checkpoint;
    let mut signers = Signers::new(dir, None);
    signers.check(cp).map_err(|e| ProofError::Log(format!("checkpoint {} (the latest): {e}", latest.index)))?;
    let signer = signers.get(&cp.key_sha256).map_err(ProofError::Log)?;
    let signer_pem = certificates_pem(&[&signer.der]);

    let log_err = |e: crate::audit::segment::SegmentError| ProofError::Log(e.to_string());
    let mut tree = super::archive::starting_tree(dir).map_err(ProofError::Log)?;
    let start = tree.size();
    let mut reader = SegmentReader::open_from(dir, start).map_err(log_err)?;
    let mut found: Option<(u64, Vec<u8>, PathBuilder)> = None;
    let mut record = ExchangeRecord::default();
    let n = cp.tree_size;
    let mut later_seq = None;
    // Every record carrying the id (and picked), to tell when it is not one alone: the first
    // few, and how many.
    let mut carrying: Vec<(u64, String)> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    let mut carried = 0_usize;
    // Ids are stored as lower-case UUIDs: a record whose bytes do not hold the id is not decoded.
    let needle = exchange_id.to_ascii_lowercase();
    let holds_id = memchr::memmem::Finder::new(needle.as_bytes());
    loop {
        let (seq, payload) = match reader.next_record() {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(e) if e.is_torn_tail() && tree.size() >= n => break,
            // Past the checkpoint, with the record found, only another carrying the id is looked
            // for: damage there is `verify`'s to report, not a reason to withhold the proof.
            Err(_) if tree.size() >= n && found.is_some() => break,
            Err(e) => return Err(log_err(e)),
        };
        if holds_id.find(payload).is_some() {
            record.clear();
            record.merge(payload).map_err(|e| ProofError::Log(format!("record {seq} does not decode: {e}")))?;
            // A strict exchange's request record shares the id; the proof is of the exchange.
            let picked = record.exchange_id.eq_ignore_ascii_case(exchange_id)
                && record.kind() == RecordKind::Exchange
                && pick.client.is_none_or(|c| record.client == c)
                && pick.record.is_none_or(|r| r == seq);
            if !picked && record.exchange_id.eq_ignore_ascii_case(exchange_id) && others.len() < AMBIGUOUS_LISTED {
                let what = if record.kind() == RecordKind::Request {
                    "the request record of a strict exchange, whose exchange record the proof is of".to_owned()
                } else {
                    format!("client {}", record.client)
                };
                others.push(format!("{seq} ({what})"));
            }
            if picked {
                carried += 1;
                if carrying.len() < AMBIGUOUS_LISTED {
                    carrying.push((seq, record.client.clone()));
                }
            }
            if picked && found.is_none() {
                if seq >= n {
                    later_seq = Some(seq);
                    break;
                }
                let builder = PathBuilder::new(seq, n, tree.frontier()).map_err(ProofError::Log)?;
                found = Some((seq, payload.to_vec(), builder));
            }
        }
        // Records after the checkpoint are read on only for another carrying the id.
        if seq >= n {
            continue;
        }
        let leaf = leaf_hash(payload);
        if let Some((_, _, builder)) = found.as_mut() {
            builder.push(seq, leaf);
        }
        tree.push(leaf);
    }
    if let Some(seq) = later_seq {
        return Err(ProofError::NotCovered { exchange_id: exchange_id.to_owned(), seq, covered: n });
    }
    let Some((index, payload, builder)) = found else {
        let scanned = reader.next_seq().saturating_sub(start);
        let others = if others.is_empty() {
            String::new()
        } else {
            format!("; records carrying that id that the proof does not take: {}", others.join(", "))
        };
        return Err(ProofError::NotFound {
            exchange_id: exchange_id.to_owned(),
            scanned,
            removed: removed_note(dir),
            others,
        });
    };
    if carried > 1 {
        let hint = match pick.client {
            Some(_) => "give --record to say which to prove",
            None => "give --client (or --record) to say which to prove",
        };
        return Err(ProofError::Ambiguous { exchange_id: exchange_id.to_owned(), carried, records: carrying, hint });
    }
    check_against_records(latest.index, cp, &tree)?;
    let path = builder.finish().ok_or_else(|| ProofError::Log("internal error: incomplete audit path".to_owned()))?;
    let leaf = leaf_hash(&payload);
    if !verify_inclusion(&leaf, index, n, &path, &tree.root()) {
        return Err(ProofError::Log("internal error: the audit path does not verify".to_owned()));
    }
    let record = ExchangeRecord::decode(payload.as_slice())
        .map_err(|e| ProofError::Log(format!("record {index} does not decode: {e}")))?;
    let out = ProofOut {
        format: INCLUSION_PROOF_FORMAT,
        exchange_id: &record.exchange_id,
        leaf_index: index,
        leaf_hash: hex::encode(leaf),
        record: RecordJson(&record),
        record_base64: BASE64.encode(&payload),
        checkpoint: CheckpointJson::from(cp),
        audit_path: path.iter().map(hex::encode).collect(),
        signer_certificate: signer_pem,
    };
    let text = serde_json::to_string_pretty(&out).map_err(|e| ProofError::Log(e.to_string()))?;
    Ok((text, index, cp.clone()))
}

/// Refuses checkpoint `index` unless `tree`, the log's records read up to the checkpoint's size,
/// holds all the records it covers and has its root: a proof from a log that does not match its
/// checkpoints would only fail later, blaming the wrong thing.
pub(super) fn check_against_records(index: u64, cp: &Checkpoint, tree: &Tree) -> Result<(), ProofError> {
    if tree.size() < cp.tree_size {
        return Err(ProofError::Log(format!(
            "checkpoint {index} covers {} records but the log holds {}: run `splpd audit verify`",
            cp.tree_size,
            tree.size()
        )));
    }
    if tree.root() != cp.root_hash.as_slice() {
        return Err(ProofError::Log(format!(
            "checkpoint {index} does not match the log's records (root {} signed, {} computed): run `splpd audit verify`",
            hex::encode(&cp.root_hash),
            hex::encode(tree.root())
        )));
    }
    Ok(())
}

/// The last checkpoint of `checkpoints.log` in `dir`.
fn latest_checkpoint(dir: &Path) -> Result<Located, ProofError> {
    let mut reader = CheckpointReader::open(dir).map_err(|e| ProofError::Log(e.to_string()))?;
    let mut latest = None;
    while let Some(located) = reader.next_checkpoint().map_err(|e| ProofError::Log(e.to_string()))? {
        latest = Some(located);
    }
    latest.ok_or_else(|| ProofError::Log(format!("{}: no checkpoint yet; a proof needs one", dir.display())))
}

/// What a proof that holds shows.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedProof {
    /// The record's exchange id.
    pub exchange_id: String,
    /// Its leaf index (sequence number) in the log.
    pub leaf_index: u64,
    /// The checkpoint it is proven against.
    pub checkpoint: Checkpoint,
    /// The identity in the signer certificate, when it has one.
    pub signer_identity: Option<String>,
    /// The signer certificate's SHA-256 fingerprint, lowercase hex.
    pub signer_fingerprint: String,
    /// The record proven, as stored.
    pub record: ExchangeRecord,
}

/// Checks a proof document made by [`make_proof`] without the log: that the record shown is the
/// record stored, that its leaf hash leads along the audit path to the checkpoint's root, and
/// that the checkpoint is signed by the embedded certificate (whose identity must be the
/// checkpoint's gateway). With `ca` (DER), the certificate must also have been issued by that CA
/// and valid when the checkpoint was signed; without it, whether to trust the certificate is the
/// auditor's call.
pub fn check_proof(text: &str, ca: Option<&[u8]>) -> Result<CheckedProof, ProofError> {
    let invalid = ProofError::Invalid;
    let proof: ProofIn = serde_json::from_str(text).map_err(|e| invalid(format!("not a proof document: {e}")))?;
    if proof.format != INCLUSION_PROOF_FORMAT {
        return Err(invalid(format!("unknown proof format {:?}; expected {INCLUSION_PROOF_FORMAT}", proof.format)));
    }
    let stored = BASE64.decode(&proof.record_base64).map_err(|e| invalid(format!("record_base64: {e}")))?;
    let record = ExchangeRecord::decode(stored.as_slice())
        .map_err(|e| invalid(format!("record_base64 does not decode as a record: {e}")))?;
    let shown = serde_json::to_value(RecordJson(&record)).map_err(|e| invalid(e.to_string()))?;
    if shown != proof.record {
        let differing = differing_fields(&shown, &proof.record);
        let fields = match differing.as_slice() {
            [one] => format!("field {one} differs"),
            many => format!("fields {} differ", many.join(", ")),
        };
        return Err(invalid(format!(
            "the record shown in the proof is not the record stored (record_base64): {fields}; the proof was altered: make it \
             again with `splpd audit proof`"
        )));
    }
    if !proof.exchange_id.eq_ignore_ascii_case(&record.exchange_id) {
        return Err(invalid(format!(
            "the proof is for exchange {}, but its record is exchange {}",
            proof.exchange_id, record.exchange_id
        )));
    }
    let leaf = leaf_hash(&stored);
    if hex::encode(leaf) != proof.leaf_hash.to_ascii_lowercase() {
        return Err(invalid(format!(
            "leaf_hash {} is not the hash of the stored record ({})",
            proof.leaf_hash,
            hex::encode(leaf)
        )));
    }
    let cp = proof.checkpoint.to_checkpoint().map_err(invalid)?;
    let root: Hash = cp
        .root_hash
        .as_slice()
        .try_into()
        .map_err(|_| invalid("the checkpoint's root_hash is not 32 bytes".to_owned()))?;
    let mut path = Vec::with_capacity(proof.audit_path.len());
    for (i, h) in proof.audit_path.iter().enumerate() {
        let bytes = hex::decode(h).map_err(|e| invalid(format!("audit_path[{i}]: {e}")))?;
        let hash: Hash = bytes.try_into().map_err(|_| invalid(format!("audit_path[{i}] is not 32 bytes")))?;
        path.push(hash);
    }
    if !verify_inclusion(&leaf, proof.leaf_index, cp.tree_size, &path, &root) {
        return Err(invalid(format!(
            "the audit path does not lead from leaf {} to the checkpoint's root {} (tree of {} records): \
             the record, its index, the path or the root was altered",
            proof.leaf_index, proof.checkpoint.root_hash, cp.tree_size
        )));
    }
    let (identity, fingerprint) = check_signed(&cp, &proof.signer_certificate, ca).map_err(invalid)?;
    Ok(CheckedProof {
        exchange_id: record.exchange_id.clone(),
        leaf_index: proof.leaf_index,
        checkpoint: cp,
        signer_identity: identity,
        signer_fingerprint: fingerprint,
        record,
    })
}

/// Checks that `cp` is signed by the certificate in `pem`, whose identity (when it has one) must
/// be the checkpoint's gateway, and with `ca` (DER) that the CA issued it and it was valid when
/// it signed. Returns the certificate's identity and SHA-256 fingerprint (hex).
pub(super) fn check_signed(cp: &Checkpoint, pem: &str, ca: Option<&[u8]>) -> Result<(Option<String>, String), String> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| "the signer certificate holds no PEM certificate".to_owned())?
        .map_err(|e| format!("the signer certificate: {e}"))?;
    verify_checkpoint(cp, &der).map_err(|e| format!("the checkpoint of {} records: {e}", cp.tree_size))?;
    check_gateway_certificate(&der, &cp.gateway, ca, cp.time_unix_nanos)
        .map_err(|problem| problem.describe("the checkpoint names", &cp.gateway, "the signer certificate"))?;
    Ok((certificate_identity(&der), hex::encode(splpd_certs::load::sha256(&der))))
}

/// The names of the fields in which two record objects differ.
fn differing_fields(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return vec!["the records".to_owned()] };
    let mut names: Vec<String> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::inclusion_proof;

    #[test]
    fn streamed_paths_equal_the_merkle_modules_proofs() {
        for size in 1..=40u64 {
            let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            for index in 0..size {
                let mut tree = Tree::new();
                let mut builder = None;
                for (seq, leaf) in leaves.iter().enumerate() {
                    let seq = seq as u64;
                    if seq == index {
                        builder = Some(PathBuilder::new(index, size, tree.frontier()).unwrap());
                    }
                    if let Some(b) = builder.as_mut() {
                        b.push(seq, *leaf);
                    }
                    tree.push(*leaf);
                }
                let path = builder.unwrap().finish().unwrap();
                assert_eq!(path, inclusion_proof(index, size, &leaves).unwrap(), "leaf {index} of {size}");
                assert!(verify_inclusion(&leaves[index as usize], index, size, &path, &tree.root()));
            }
        }
    }
}

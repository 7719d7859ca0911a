//! Consistency proofs between two signed checkpoints of one log (RFC 6962 §2.1.2): that the log
//! a later checkpoint covers extends the one an earlier checkpoint covered, untouched. An auditor
//! who kept an old checkpoint (from a proof or an export) checks with one of these that nothing
//! before it was changed or removed since, without the log.
//!
//! Made in one streaming pass over the records, so memory stays bounded for any log size.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::archive::{MANIFEST_FILE, MANIFEST_FORMAT};
use super::json::rfc3339_nanos;
use super::proof::{CheckpointJson, INCLUSION_PROOF_FORMAT, ProofError, check_against_records, check_signed};
use super::{CheckpointReader, Signers, certificates_pem, ensure_log};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::merkle::{Hash, RangeRoots, consistency_ranges, leaf_hash, verify_consistency};
use crate::audit::segment::SegmentReader;

/// The `format` of a consistency proof document.
pub const CONSISTENCY_PROOF_FORMAT: &str = "splpd-consistency-proof/v1";

#[derive(Debug, Serialize, Deserialize)]
struct ConsistencyDoc {
    format: String,
    old_checkpoint: CheckpointJson,
    new_checkpoint: CheckpointJson,
    /// The subtree roots of the proof, lowercase hex, in RFC 6962's order.
    proof: Vec<String>,
    /// The certificates that signed the old and the new checkpoint (PEM; the same text twice when
    /// one key signed both).
    old_signer_certificate: String,
    new_signer_certificate: String,
}

/// What a consistency proof that holds shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedConsistency {
    /// The earlier checkpoint.
    pub old: Checkpoint,
    /// The later checkpoint, whose log extends the earlier one's.
    pub new: Checkpoint,
    /// The identity in each signer certificate, when it has one.
    pub signer_identities: (Option<String>, Option<String>),
}

/// Makes the proof that the log in `dir` under its checkpoint of `new_size` records (the latest
/// checkpoint when `None`) extends the log under its checkpoint of `old_size` records. Both sizes
/// must be those of signed checkpoints in `checkpoints.log`.
pub fn make_consistency_proof(dir: &Path, old_size: u64, new_size: Option<u64>) -> Result<String, ProofError> {
    make(dir, old_size, new_size, None)
}

/// Makes the proof that the log in `dir` under its checkpoint of `new_size` records (the latest
/// when `None`) extends the checkpoint an auditor kept (see [`read_kept_checkpoint`]). The log's
/// checkpoint of the kept size must be the kept one; a log whose checkpoints no longer reach or
/// hold the kept one is refused as evidence that it was cut short or rewritten since, all before
/// the records are read.
pub fn make_kept_consistency_proof(dir: &Path, kept: &Checkpoint, new_size: Option<u64>) -> Result<String, ProofError> {
    make(dir, kept.tree_size, new_size, Some(kept))
}

fn make(dir: &Path, old_size: u64, new_size: Option<u64>, kept: Option<&Checkpoint>) -> Result<String, ProofError> {
    let log = |e: String| ProofError::Log(e);
    ensure_log(dir).map_err(|e| log(e.to_string()))?;
    let mut reader = CheckpointReader::open(dir).map_err(|e| log(e.to_string()))?;
    let (mut old, mut new, mut sizes) = (None, None, Vec::new());
    while let Some(located) = reader.next_checkpoint().map_err(|e| log(e.to_string()))? {
        let size = located.checkpoint.tree_size;
        sizes.push(size);
        if size == old_size && old.is_none() {
            old = Some(located.clone());
        }
        if new_size.is_none_or(|n| n == size) {
            new = Some(located);
        }
    }
    let no_checkpoint = |size: u64, which: &str| {
        ProofError::Invalid(format!(
            "no checkpoint covers exactly {size} records, so the {which} end of the proof has no signed root; \
             checkpoints in this log cover {}",
            describe_sizes(&sizes)
        ))
    };
    if let Some(kept) = kept {
        // Before the records are read: what the checkpoints alone show about the kept one.
        kept_against_checkpoints(dir, kept, old.as_ref().map(|l| &l.checkpoint), new.as_ref(), new_size, &sizes)?;
    }
    let old_located = old.ok_or_else(|| no_checkpoint(old_size, "old"))?;
    let new_located = match (new, new_size) {
        (Some(new), _) => new,
        (None, Some(n)) => return Err(no_checkpoint(n, "new")),
        (None, None) => return Err(log(format!("{}: no checkpoint yet; a proof needs two", dir.display()))),
    };
    let (old, new) = (&old_located.checkpoint, &new_located.checkpoint);
    if old.tree_size > new.tree_size {
        return Err(ProofError::Invalid(format!(
            "the old checkpoint ({} records) is larger than the new one ({} records): give the smaller size first",
            old.tree_size, new.tree_size
        )));
    }

    let mut signers = Signers::new(dir, None);
    let mut pem = |cp: &Checkpoint| -> Result<String, ProofError> {
        signers.check(cp).map_err(|e| log(format!("the checkpoint of {} records: {e}", cp.tree_size)))?;
        Ok(certificates_pem(&[&signers.get(&cp.key_sha256).map_err(log)?.der]))
    };
    let (old_pem, new_pem) = (pem(old)?, pem(new)?);

    let ranges = consistency_ranges(old.tree_size, new.tree_size);
    // Both checkpoints are checked against the records as they stream past, as for an inclusion
    // proof: a proof from a log that no longer matches them would fail later, blaming the wrong
    // thing.
    // A log that starts after record 0 (an archive, or a log retention trimmed) starts from its
    // tree's frontier there, from which a proof from any checkpoint at or after that start is made.
    let mut tree = super::archive::starting_tree(dir).map_err(log)?;
    let first = tree.size();
    let resumed = if old.tree_size < first { Err((0, old.tree_size)) } else { RangeRoots::resuming(&ranges, &tree) };
    let mut roots = resumed.map_err(|(lo, hi)| {
        let whence = if dir.join(super::MANIFEST_FILE).exists() {
            "which this archive does not hold; make it from the live log, or from an archive that starts earlier"
        } else {
            "which retention removed; make it from the export archives that hold them (see exports.log)"
        };
        log(format!(
            "a proof from the checkpoint of {} records needs records before {first} (the subtree of records \
             {lo}..{hi}), {whence} ({})",
            old.tree_size,
            dir.display()
        ))
    })?;
    let mut records = SegmentReader::open_from(dir, first).map_err(|e| log(e.to_string()))?;
    loop {
        if tree.size() == old.tree_size {
            check_against_records(old_located.index, old, &tree)?;
        }
        if tree.size() >= new.tree_size {
            break;
        }
        match records.next_record() {
            Ok(Some((_, payload))) => {
                let leaf = leaf_hash(payload);
                roots.push(leaf);
                tree.push(leaf);
            }
            Ok(None) => break,
            Err(e) => return Err(log(e.to_string())),
        }
    }
    check_against_records(new_located.index, new, &tree)?;
    let proof = roots.finish().ok_or_else(|| log("internal error: the proof's subtrees are incomplete".to_owned()))?;
    let doc = ConsistencyDoc {
        format: CONSISTENCY_PROOF_FORMAT.to_owned(),
        old_checkpoint: CheckpointJson::from(old),
        new_checkpoint: CheckpointJson::from(new),
        proof: proof.iter().map(hex::encode).collect(),
        old_signer_certificate: old_pem,
        new_signer_certificate: new_pem,
    };
    serde_json::to_string_pretty(&doc).map_err(|e| log(e.to_string()))
}

fn describe_sizes(sizes: &[u64]) -> String {
    match sizes {
        [] => "nothing (there is no checkpoint yet)".to_owned(),
        [only] => format!("{only} records"),
        [first, .., last] if sizes.len() > 8 => format!("{} sizes from {first} to {last} records", sizes.len()),
        _ => format!("{} records", sizes.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// Reads a checkpoint an auditor kept, from any document that carries one: an inclusion proof
/// (its `checkpoint`), a consistency proof (its `new_checkpoint`), an export's `MANIFEST.json`
/// (its `latest_checkpoint`), or the checkpoint object alone.
pub fn read_kept_checkpoint(text: &str) -> Result<Checkpoint, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let field = match value.get("format").and_then(|f| f.as_str()) {
        Some(INCLUSION_PROOF_FORMAT) => "checkpoint",
        Some(CONSISTENCY_PROOF_FORMAT) => "new_checkpoint",
        Some(MANIFEST_FORMAT) => "latest_checkpoint",
        Some(other) => {
            return Err(format!(
                "a document of format {other:?} carries no checkpoint; give an inclusion or consistency proof, an \
                 export's {MANIFEST_FILE}, or a checkpoint object"
            ));
        }
        None => "",
    };
    let checkpoint = if field.is_empty() { value } else { value.get(field).cloned().unwrap_or_default() };
    if checkpoint.is_null() {
        return Err(format!("its {field} is empty: the document carries no checkpoint"));
    }
    let json: CheckpointJson = serde_json::from_value(checkpoint).map_err(|e| {
        format!(
            "not a checkpoint: {e}; give an inclusion or consistency proof, an export's {MANIFEST_FILE}, or a \
             checkpoint object as they hold it"
        )
    })?;
    json.to_checkpoint()
}

/// Refuses to make a proof from the checkpoint an auditor kept (`kept`) when the checkpoints of
/// the log in `dir` show already that the log is not the kept one's grown on: another gateway's,
/// no checkpoint of the kept size (`old`), or none as large (the latest being `new`, of `sizes`),
/// or the kept size's with another root. A log holds every checkpoint it signed, so the last
/// three are evidence that the log was cut short or rewritten since, unless `dir` is an export
/// archive, which holds only the checkpoints over its own records.
fn kept_against_checkpoints(
    dir: &Path,
    kept: &Checkpoint,
    old: Option<&Checkpoint>,
    new: Option<&super::Located>,
    new_size: Option<u64>,
    sizes: &[u64],
) -> Result<(), ProofError> {
    let invalid = |text: String| ProofError::Invalid(format!("{}: {text}", dir.display()));
    let kept_text = format!(
        "the kept checkpoint of {} records (signed at {})",
        kept.tree_size,
        rfc3339_nanos(kept.time_unix_nanos).unwrap_or_default()
    );
    if let Some(latest) = new.map(|l| &l.checkpoint)
        && latest.gateway != kept.gateway
    {
        return Err(invalid(format!(
            "the kept checkpoint is gateway {}'s, but this log's checkpoints are gateway {}'s: give gateway {}'s audit \
             directory",
            kept.gateway, latest.gateway, kept.gateway
        )));
    }
    if let Some(n) = new_size
        && n < kept.tree_size
    {
        return Err(invalid(format!(
            "--to {n} is before {kept_text}: a proof runs from the kept checkpoint to a later one; give a larger --to, \
             or leave it out for the latest checkpoint"
        )));
    }
    if dir.join(MANIFEST_FILE).exists() && old.is_none() {
        return Err(invalid(format!(
            "this export archive does not hold {kept_text}: an archive holds only the checkpoints over its own \
             records ({}); make the proof from the gateway's audit directory, or from an archive of the records up to \
             the kept checkpoint",
            describe_sizes(sizes)
        )));
    }
    let evidence = "this is evidence that the log was cut short or rewritten since the kept checkpoint was signed, \
                    unless this is not the directory of the log it was kept from";
    let largest = sizes.iter().max().copied();
    match (old, largest) {
        (_, None) => Err(invalid(format!(
            "the log has no checkpoint at all, though {kept_text} shows that it had signed one over {} records: \
             {evidence}",
            kept.tree_size
        ))),
        (_, Some(largest)) if largest < kept.tree_size => Err(invalid(format!(
            "the log's checkpoints cover at most {largest} records, fewer than {kept_text}: {evidence}"
        ))),
        (None, Some(_)) => Err(invalid(format!(
            "the log has no checkpoint of {} records, though {kept_text} is one it signed, and a log keeps every \
             checkpoint it signed (its checkpoints cover {}): {evidence}",
            kept.tree_size,
            describe_sizes(sizes)
        ))),
        (Some(old), Some(_)) => check_kept(kept, old).map_err(invalid),
    }
}

/// Refuses a proof whose old checkpoint is not the one the auditor kept (`kept`): one of another
/// gateway or size cannot tell, and one of the same size with another root means that the log
/// was rewritten since the kept checkpoint was signed, whoever signed the new one.
fn check_kept(kept: &Checkpoint, old: &Checkpoint) -> Result<(), String> {
    if kept.gateway != old.gateway {
        return Err(format!(
            "the kept checkpoint is gateway {}'s, but the proof is of gateway {}'s log: give the checkpoint kept of \
             that gateway",
            kept.gateway, old.gateway
        ));
    }
    if kept.tree_size != old.tree_size {
        return Err(format!(
            "the proof starts from the checkpoint of {} records, but the kept checkpoint covers {} records: make the \
             proof from it with `splpd audit consistency DIR --from {}`",
            old.tree_size, kept.tree_size, kept.tree_size
        ));
    }
    if kept.root_hash != old.root_hash {
        return Err(format!(
            "the log was rewritten since the kept checkpoint: the kept checkpoint of {} records (signed at {}) has \
             root {}, but the log's checkpoint of {} records now has root {} (signed at {}): records before {} were \
             changed, removed, inserted or reordered since",
            kept.tree_size,
            rfc3339_nanos(kept.time_unix_nanos).unwrap_or_default(),
            hex::encode(&kept.root_hash),
            old.tree_size,
            hex::encode(&old.root_hash),
            rfc3339_nanos(old.time_unix_nanos).unwrap_or_default(),
            old.tree_size
        ));
    }
    Ok(())
}

/// Checks a consistency proof made by [`make_consistency_proof`] without the log: both
/// checkpoints signed (by the embedded certificates, whose identity must be the checkpoints'
/// gateway, and with `ca` (DER) issued by that CA), by the same gateway, and the proof leading
/// from the old root to the new one. With `kept`, the checkpoint the auditor kept from earlier
/// (see [`read_kept_checkpoint`]), the proof's old checkpoint must be that one: the folder the
/// proof was made from may have been rewritten and its checkpoints signed again.
pub fn check_consistency_proof(
    text: &str,
    ca: Option<&[u8]>,
    kept: Option<&Checkpoint>,
) -> Result<CheckedConsistency, ProofError> {
    let invalid = ProofError::Invalid;
    let doc: ConsistencyDoc =
        serde_json::from_str(text).map_err(|e| invalid(format!("not a consistency proof document: {e}")))?;
    if doc.format != CONSISTENCY_PROOF_FORMAT {
        return Err(invalid(format!("unknown proof format {:?}; expected {CONSISTENCY_PROOF_FORMAT}", doc.format)));
    }
    let old = doc.old_checkpoint.to_checkpoint().map_err(|e| invalid(format!("old_checkpoint: {e}")))?;
    let new = doc.new_checkpoint.to_checkpoint().map_err(|e| invalid(format!("new_checkpoint: {e}")))?;
    if old.gateway != new.gateway {
        return Err(invalid(format!(
            "the checkpoints are of two gateways' logs ({} and {}); a consistency proof relates one log",
            old.gateway, new.gateway
        )));
    }
    if let Some(kept) = kept {
        if kept.gateway == old.gateway && kept.tree_size > new.tree_size {
            return Err(invalid(format!(
                "the kept checkpoint covers {} records, more than this proof reaches ({} records): it is newer than \
                 the proof, which cannot show that the log extends it; make a proof from it to a later checkpoint \
                 with `splpd audit consistency DIR --kept FILE`; this one can be checked against a checkpoint kept \
                 of exactly {} records, where it starts",
                kept.tree_size, new.tree_size, old.tree_size
            )));
        }
        check_kept(kept, &old).map_err(invalid)?;
    }
    let (old_identity, _) = check_signed(&old, &doc.old_signer_certificate, ca).map_err(invalid)?;
    let (new_identity, _) = check_signed(&new, &doc.new_signer_certificate, ca).map_err(invalid)?;
    let root = |cp: &Checkpoint, which: &str| -> Result<Hash, ProofError> {
        cp.root_hash
            .as_slice()
            .try_into()
            .map_err(|_| invalid(format!("the {which} checkpoint's root_hash is not 32 bytes")))
    };
    let (old_root, new_root) = (root(&old, "old")?, root(&new, "new")?);
    let mut proof = Vec::with_capacity(doc.proof.len());
    for (i, h) in doc.proof.iter().enumerate() {
        let bytes = hex::decode(h).map_err(|e| invalid(format!("proof[{i}]: {e}")))?;
        proof.push(Hash::try_from(bytes).map_err(|_| invalid(format!("proof[{i}] is not 32 bytes")))?);
    }
    if !verify_consistency(old.tree_size, new.tree_size, &old_root, &new_root, &proof) {
        return Err(invalid(format!(
            "the proof does not lead from the root of {} records ({}) to the root of {} records ({}): \
             the log was changed between the two checkpoints, or the proof or a checkpoint was altered",
            old.tree_size, doc.old_checkpoint.root_hash, new.tree_size, doc.new_checkpoint.root_hash
        )));
    }
    Ok(CheckedConsistency { old, new, signer_identities: (old_identity, new_identity) })
}

//! `vsr inspect <path>`: what a data file holds, read with plain reads and never written: the
//! superblock copies, a journal summary classified exactly as recovery would, client replies.

use super::{read_superblock, Failure, Sizes};
use crate::header::commands::Reply;
use crate::header::{Command, Header, HEADER_SIZE};
use crate::journal::{
    classify, prepare_header_valid, prepare_state, ring_header_valid, SlotRecovery,
};
use crate::storage::{Layout, Zone, SUPERBLOCK_COPIES};
use crate::superblock::SuperBlock;
use std::os::unix::fs::FileExt;
use std::path::Path;

fn read(file: &std::fs::File, offset: u64, len: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; len];
    let n = file.read_at(&mut buffer, offset).unwrap_or(0);
    buffer[n..].fill(0);
    buffer
}

pub fn inspect(path: &Path) -> Result<String, Failure> {
    let sb = read_superblock(path)?;
    let config = Sizes::of_superblock(&sb).config(sb.replica_count);
    let layout = Layout::new(&config);
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::runtime(format!("open {}: {e}", path.display())))?;
    let mut out = String::new();
    out.push_str(&format!("data file: {}\n", path.display()));
    if held_by_a_replica(&file) {
        out.push_str(
            "note: a replica is running on this file (it holds the file's lock). This is the file \
             as last written: the superblock (view, commit_max, checkpoint) is as of its last \
             superblock write, at a view change or a checkpoint, not the live commit point, and \
             the journal may be mid-write. Stop the replica for an exact picture.\n",
        );
    }
    describe_superblock(&mut out, &sb);
    describe_superblock_copies(&mut out, &file, &layout);
    describe_journal(&mut out, &file, &layout, &sb);
    describe_client_replies(&mut out, &file, &layout, &sb);
    Ok(out)
}

/// Whether a running replica holds the file's lock (src/io/file_storage.rs takes it exclusive).
fn held_by_a_replica(file: &std::fs::File) -> bool {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    // Safety: fd is open for the duration of the calls; a shared lock taken is released at once.
    if unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK);
    }
    unsafe { libc::flock(fd, libc::LOCK_UN) };
    false
}

/// The superblock that `read_superblock` chose: identity, VSR state and configuration.
fn describe_superblock(out: &mut String, sb: &SuperBlock) {
    let state = &sb.vsr_state;
    out.push_str(&format!(
        "superblock: cluster={} replica={} replica_count={} sequence={}\n",
        sb.cluster, sb.replica, sb.replica_count, sb.sequence
    ));
    out.push_str(&format!(
        "  view={} log_view={} commit_max={} view_head_op={}\n",
        state.view,
        state.log_view,
        state.commit_max,
        state.view_head_op()
    ));
    let checkpoint = state.checkpoint;
    if checkpoint.op == 0 {
        out.push_str("  checkpoint: none yet (the journal replays from op 1)\n");
    } else {
        out.push_str(&format!(
            "  checkpoint: op={} id={:032x} size={} chunks={} area={} digest={:032x}\n",
            checkpoint.op,
            checkpoint.id,
            checkpoint.size,
            checkpoint.chunks,
            checkpoint.area,
            checkpoint.digest
        ));
    }
    let previous = state.checkpoint_previous;
    if previous.op > 0 {
        out.push_str(&format!(
            "  previous checkpoint: op={} id={:032x} area={} (served to peers until overwritten)\n",
            previous.op, previous.id, previous.area
        ));
    }
    if state.rejoining {
        out.push_str("  rejoining: yes (re-created by `vsr recover`: takes no part in view changes and never votes \"not acknowledged\" until it has caught up)\n");
    }
    out.push_str(&format!(
        "  configuration: message_size_max={} journal_slot_count={} pipeline_max={} clients_max={}\n",
        sb.message_size_max, sb.journal_slot_count, sb.pipeline_max, sb.clients_max
    ));
}

/// Each superblock copy's sequence, or that it is damaged.
fn describe_superblock_copies(out: &mut String, file: &std::fs::File, layout: &Layout) {
    let copies: Vec<String> = (0..SUPERBLOCK_COPIES)
        .map(|copy| {
            let bytes = read(
                file,
                copy as u64 * layout.superblock_copy_size,
                layout.superblock_copy_size as usize,
            );
            match SuperBlock::decode(&bytes, layout) {
                Some(c) => format!("#{copy}: sequence {}", c.sequence),
                None => format!("#{copy}: damaged"),
            }
        })
        .collect();
    out.push_str(&format!("  copies: {}\n", copies.join(", ")));
}

/// How many slots recovery would find clean, faulty or empty, and which ops they hold.
fn describe_journal(out: &mut String, file: &std::fs::File, layout: &Layout, sb: &SuperBlock) {
    let slots = sb.journal_slot_count as usize;
    let ring = read(
        file,
        layout.zone_offset(Zone::WalHeaders),
        layout.wal_headers_size as usize,
    );
    let (mut clean, mut faulty_known, mut faulty_unknown, mut empty) = (0u64, 0u64, 0u64, 0u64);
    let (mut op_min, mut op_max) = (u64::MAX, 0u64);
    let mut faulty_slots = Vec::new();
    let mut clean_ops = Vec::with_capacity(slots);
    for slot in 0..slots {
        match slot_recovery(file, layout, sb, &ring, slot) {
            SlotRecovery::Clean(p) => {
                clean += 1;
                clean_ops.push(p.op);
                op_min = op_min.min(p.op);
                op_max = op_max.max(p.op);
            }
            SlotRecovery::FaultyKnown(h) => {
                faulty_known += 1;
                faulty_slots.push(format!("{slot} (op {})", h.op));
            }
            SlotRecovery::FaultyUnknown => {
                faulty_unknown += 1;
                faulty_slots.push(format!("{slot} (op unknown)"));
            }
            SlotRecovery::Empty => empty += 1,
        }
    }
    out.push_str(&format!("journal: {slots} slots: {clean} clean, {faulty_known} faulty (op known), {faulty_unknown} faulty (op unknown), {empty} empty\n"));
    if clean > 0 {
        out.push_str(&format!("  ops present: {op_min}..={op_max}\n"));
        // What the replica still has to repair before its journal covers everything it needs:
        // every op after its checkpoint, up to its head.
        clean_ops.sort_unstable();
        let missing = (sb.vsr_state.checkpoint.op + 1..=op_max)
            .filter(|op| clean_ops.binary_search(op).is_err())
            .count();
        out.push_str(&format!(
            "  ops missing between the checkpoint and the head: {missing}\n"
        ));
    }
    if !faulty_slots.is_empty() {
        faulty_slots.truncate(16);
        out.push_str(&format!("  faulty slots: {}\n", faulty_slots.join(", ")));
    }
}

/// What recovery would decide for journal slot `slot`, from its header-ring entry (in `ring`,
/// the whole ring) and its prepare, by the journal's own rules.
fn slot_recovery(
    file: &std::fs::File,
    layout: &Layout,
    sb: &SuperBlock,
    ring: &[u8],
    slot: usize,
) -> SlotRecovery {
    let slots = sb.journal_slot_count as usize;
    let msm = sb.message_size_max as usize;
    let h = Header::read_from(&ring[slot * HEADER_SIZE..]);
    let ring_ok = ring_header_valid(&h, sb.cluster, msm, slots, slot);
    let prepare_offset = layout.zone_offset(Zone::WalPrepares) + (slot * msm) as u64;
    let first = read(file, prepare_offset, crate::config::SECTOR_SIZE);
    let p = Header::read_from(&first);
    let valid = prepare_header_valid(&p, sb.cluster, msm, slots, slot)
        && p.valid_checksum_body(&read(file, prepare_offset, p.size as usize)[HEADER_SIZE..]);
    let prepare = prepare_state(&first[..HEADER_SIZE], p, valid);
    classify(ring_ok.then_some(h), prepare)
}

/// The client sessions with a durable reply: a valid reply header in their client-replies slot.
fn describe_client_replies(
    out: &mut String,
    file: &std::fs::File,
    layout: &Layout,
    sb: &SuperBlock,
) {
    let msm = sb.message_size_max as usize;
    let mut sessions = Vec::new();
    for index in 0..sb.clients_max as usize {
        let offset = layout.zone_offset(Zone::ClientReplies) + (index * msm) as u64;
        let h = Header::read_from(&read(file, offset, HEADER_SIZE));
        if h.valid_checksum() && h.command() == Some(Command::Reply) && h.cluster == sb.cluster {
            let reply = Reply::from_header(&h);
            sessions.push(format!(
                "  client {:032x}: session {} request {} (reply op {})",
                reply.client, reply.session, reply.request, reply.op
            ));
        }
    }
    out.push_str(&format!(
        "client sessions with a durable reply: {}\n",
        sessions.len()
    ));
    for s in sessions {
        out.push_str(&s);
        out.push('\n');
    }
}

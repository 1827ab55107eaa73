//! Checkpoint files: a global snapshot saved as JSON and checked whole when read back (cargo
//! feature `serde`).
//!
//! A checkpoint is two lines of JSON:
//!
//! 1. a header, `{"format":"chandy-lamport checkpoint","version":1,"bytes":N,"checksum":"fnv1a64:…"}`;
//! 2. the snapshot (every field of [`GlobalSnapshot`], serialised by serde), exactly `N` bytes,
//!    whose FNV-1a 64-bit hash is the header's checksum.
//!
//! Reading checks, in order: the header parses and names this format and version; the snapshot
//! line has exactly the announced length (a truncated file is caught here); its checksum matches
//! (a flipped digit that still parses is caught here); it parses; it is a consistent cut. The
//! checksum guards against damage, not against someone forging a file on purpose.
//!
//! [`save`] writes atomically: a temporary file in the same directory, flushed to disk, then
//! renamed over the target, so a crash mid-write never leaves a torn checkpoint under the
//! target's name.
//!
//! ```
//! # use std::{sync::Arc, time::Duration};
//! use chandy_lamport::checkpoint;
//! use chandy_lamport::{Channel, ChannelSnapshot, GlobalSnapshot, RecordedMessage, SnapshotId};
//!
//! let snapshot: GlobalSnapshot<u64, u64> = GlobalSnapshot {
//!     id: SnapshotId::random(),
//!     initiator: 0,
//!     started_at: Duration::ZERO,
//!     completed_at: Duration::from_micros(80),
//!     recorded_at: vec![Duration::ZERO, Duration::from_micros(60)],
//!     states: vec![7, 2],
//!     channels: vec![
//!         ChannelSnapshot { channel: Channel::new(0, 1), sent: 3, received: 2,
//!             messages: vec![RecordedMessage { seq: 3, message: Arc::new(1) }] },
//!         ChannelSnapshot { channel: Channel::new(1, 0), sent: 0, received: 0, messages: vec![] },
//!     ],
//! };
//! let text = checkpoint::encode(&snapshot)?;
//! assert_eq!(checkpoint::decode::<u64, u64>(&text)?, snapshot);
//! // One digit changed: still valid JSON, but refused.
//! let damaged = text.replacen("\"states\":[7,2]", "\"states\":[8,2]", 1);
//! assert!(checkpoint::decode::<u64, u64>(&damaged).is_err());
//! # Ok::<(), chandy_lamport::error::CheckpointError>(())
//! ```

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::CheckpointError;
use crate::snapshot::GlobalSnapshot;

/// What the header's `format` says.
pub const FORMAT: &str = "chandy-lamport checkpoint";
/// The version of the format this crate writes and reads.
pub const VERSION: u64 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u64,
    bytes: usize,
    checksum: String,
}

/// FNV-1a, 64 bits: a few lines, no dependency, and any single changed byte changes it.
fn checksum(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{hash:016x}")
}

/// The checkpoint text of `snapshot` (two lines, the last ending in a newline).
pub fn encode<M: Serialize, S: Serialize>(
    snapshot: &GlobalSnapshot<M, S>,
) -> Result<String, CheckpointError> {
    let body =
        serde_json::to_string(snapshot).map_err(|e| CheckpointError::Encode(e.to_string()))?;
    let header = Header {
        format: FORMAT.to_string(),
        version: VERSION,
        bytes: body.len(),
        checksum: checksum(body.as_bytes()),
    };
    let header =
        serde_json::to_string(&header).map_err(|e| CheckpointError::Encode(e.to_string()))?;
    Ok(format!("{header}\n{body}\n"))
}

/// Reads a checkpoint text back, checking it whole (see the module documentation).
pub fn decode<M: DeserializeOwned, S: DeserializeOwned>(
    text: &str,
) -> Result<GlobalSnapshot<M, S>, CheckpointError> {
    let malformed = |line: usize, message: String| CheckpointError::Malformed { line, message };
    let (header, rest) = text.split_once('\n').unwrap_or((text, ""));
    let header: Header = serde_json::from_str(header)
        .map_err(|e| malformed(1, format!("is not a checkpoint header: {e}")))?;
    if header.format != FORMAT {
        return Err(CheckpointError::Format {
            found: header.format,
        });
    }
    if header.version != VERSION {
        return Err(CheckpointError::Format {
            found: format!("{FORMAT} version {}", header.version),
        });
    }
    let body = rest.strip_suffix('\n').unwrap_or(rest);
    if body.len() < header.bytes {
        return Err(CheckpointError::Truncated {
            expected: header.bytes,
            found: body.len(),
        });
    }
    if body.len() > header.bytes {
        return Err(CheckpointError::TooLong {
            expected: header.bytes,
            found: body.len(),
        });
    }
    let found = checksum(body.as_bytes());
    if found != header.checksum {
        return Err(CheckpointError::Checksum {
            expected: header.checksum,
            found,
        });
    }
    let snapshot: GlobalSnapshot<M, S> = serde_json::from_str(body).map_err(|e| {
        malformed(
            2,
            format!("is not a snapshot of the message and state types asked for: {e}"),
        )
    })?;
    snapshot.verify().map_err(CheckpointError::Inconsistent)?;
    Ok(snapshot)
}

fn io_error(path: &Path, e: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes `snapshot` to `path` atomically: to a temporary file beside it, flushed to disk, then
/// renamed over `path`.
pub fn save<M: Serialize, S: Serialize>(
    path: impl AsRef<Path>,
    snapshot: &GlobalSnapshot<M, S>,
) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let text = encode(snapshot)?;
    let name = path
        .file_name()
        .ok_or_else(|| io_error(path, std::io::Error::other("not a file name")))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        snapshot.id
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform syncs directories).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(path, e)
    })
}

/// Reads and checks the checkpoint at `path`.
pub fn load<M: DeserializeOwned, S: DeserializeOwned>(
    path: impl AsRef<Path>,
) -> Result<GlobalSnapshot<M, S>, CheckpointError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    decode(&text)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::snapshot::{ChannelSnapshot, RecordedMessage, SnapshotId};
    use crate::topology::Channel;

    fn sample() -> GlobalSnapshot<String, u64> {
        GlobalSnapshot {
            id: SnapshotId::random(),
            initiator: 1,
            started_at: Duration::from_micros(5),
            completed_at: Duration::from_micros(95),
            recorded_at: vec![Duration::from_micros(5), Duration::from_micros(40)],
            states: vec![10, 20],
            channels: vec![
                ChannelSnapshot {
                    channel: Channel::new(0, 1),
                    sent: 4,
                    received: 2,
                    messages: vec![
                        RecordedMessage {
                            seq: 3,
                            message: Arc::new("a".into()),
                        },
                        RecordedMessage {
                            seq: 4,
                            message: Arc::new("b\n\"c\"".into()),
                        },
                    ],
                },
                ChannelSnapshot {
                    channel: Channel::new(1, 0),
                    sent: 0,
                    received: 0,
                    messages: vec![],
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        let text = encode(&s).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(decode::<String, u64>(&text).unwrap(), s);
    }

    #[test]
    fn every_kind_of_damage_is_refused() {
        let text = encode(&sample()).unwrap();
        let d = |t: &str| decode::<String, u64>(t).unwrap_err();
        // Cut anywhere in the snapshot line.
        for cut in [
            text.len() - 1 - 1,
            text.len() - 20,
            text.find('\n').unwrap() + 5,
        ] {
            assert!(
                matches!(d(&text[..cut]), CheckpointError::Truncated { .. }),
                "cut at {cut}"
            );
        }
        assert!(matches!(d(""), CheckpointError::Malformed { line: 1, .. }));
        assert!(matches!(
            d("{\"format\":\"x\"}\n"),
            CheckpointError::Malformed { line: 1, .. }
        ));
        // A digit flipped: still valid JSON of the same length.
        let flipped = text.replacen("\"states\":[10,20]", "\"states\":[10,21]", 1);
        assert!(matches!(d(&flipped), CheckpointError::Checksum { .. }));
        let other = text.replacen(FORMAT, "something else", 1);
        assert!(matches!(d(&other), CheckpointError::Format { .. }));
        let v2 = text.replacen("\"version\":1", "\"version\":2", 1);
        assert!(matches!(d(&v2), CheckpointError::Format { .. }));
        let longer = format!("{text}{{}}\n");
        assert!(matches!(d(&longer), CheckpointError::TooLong { .. }));
    }

    #[test]
    fn a_damaged_file_is_called_damaged_before_the_detail() {
        let text = encode(&sample()).unwrap();
        let body = text.lines().nth(1).unwrap().len();
        let d = |t: &str| decode::<String, u64>(t).unwrap_err().to_string();
        let one_more = format!("{}x\n", text.trim_end());
        assert_eq!(
            d(&one_more),
            format!(
                "damaged checkpoint: line 2 has 1 byte more than the {body} its header announces"
            )
        );
        let two_more = format!("{}xy\n", text.trim_end());
        assert!(
            d(&two_more).contains(" has 2 bytes more "),
            "{}",
            d(&two_more)
        );
        assert_eq!(
            d(&text[..text.len() - 11]),
            format!(
                "damaged checkpoint, cut short: line 2 has {} of the {body} bytes its header \
                 announces",
                body - 10
            )
        );
        let flipped = text.replacen("\"states\":[10,20]", "\"states\":[10,21]", 1);
        assert!(d(&flipped).starts_with("damaged checkpoint: line 2 does not have the checksum"));
        assert!(d("{}").starts_with("malformed checkpoint: line 1 is not a checkpoint header: "));
        let other = text.replacen(FORMAT, "something else", 1);
        assert_eq!(
            d(&other),
            "not a checkpoint this version of chandy-lamport reads: its header says \
             \"something else\""
        );
    }

    #[test]
    fn an_inconsistent_snapshot_is_refused_even_with_a_good_checksum() {
        let mut s = sample();
        s.channels[0].received = 3; // one recorded message too many now
        let text = encode(&s).unwrap();
        assert!(matches!(
            decode::<String, u64>(&text).unwrap_err(),
            CheckpointError::Inconsistent(_)
        ));
    }

    #[test]
    fn save_is_atomic_and_load_reads_it_back() {
        let dir = std::env::temp_dir().join(format!("cl-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("snap.json");
        let s = sample();
        save(&path, &s).unwrap();
        assert_eq!(load::<String, u64>(&path).unwrap(), s);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        assert!(matches!(
            load::<String, u64>(dir.join("missing.json")).unwrap_err(),
            CheckpointError::Io { .. }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

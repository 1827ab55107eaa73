//! One test per rule of `src/algorithm.rs` ("The rules, for one snapshot id S"), each
//! citing the rule it checks, then the bookkeeping the rules imply.

use std::sync::Arc;

use super::*;

type Rec = Recorder<&'static str, u32>;

fn id(n: u128) -> SnapshotId {
    SnapshotId(uuid::Uuid::from_u128(n))
}

fn seqs(messages: &[RecordedMessage<&'static str>]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

fn bodies(messages: &[RecordedMessage<&'static str>]) -> Vec<&'static str> {
    messages.iter().map(|m| *m.message).collect()
}

/// Delivers `n` messages on `channel`, numbered after those already received.
fn deliver(rec: &mut Rec, channel: usize, bodies: &[&'static str]) {
    for body in bodies {
        let seq = rec.received(channel) + 1;
        rec.on_message(channel, seq, body);
    }
}

// Initiator rule 1: "records its own state".
#[test]
fn initiator_records_its_own_state_at_initiation() {
    let mut rec = Rec::new(0, 2);
    let p = rec.initiate(id(1), 42, &[3, 4]).unwrap();
    assert!(p.completed.is_none());
    let _ = rec
        .on_marker(0, id(1), || panic!("must not record again"), &[9, 9])
        .unwrap();
    let p = rec
        .on_marker(1, id(1), || panic!("must not record again"), &[9, 9])
        .unwrap();
    let local = p.completed.unwrap();
    assert_eq!(local.state, 42);
    assert_eq!(local.sent, vec![3, 4], "sent counters are those at the cut");
    assert!(local.initiated);
}

// Initiator rule 2: "sends a marker(S) on every outgoing channel, before any further
// application message on it".
#[test]
fn initiator_asks_for_markers_at_once() {
    let mut rec = Rec::new(0, 1);
    let p = rec.initiate(id(1), 0, &[]).unwrap();
    assert!(p.send_markers);
}

// Initiator rule 3: "starts recording every incoming channel".
#[test]
fn initiator_records_every_incoming_channel() {
    let mut rec = Rec::new(0, 3);
    assert!((0..3).all(|c| !rec.is_recording(c)));
    let _ = rec.initiate(id(1), 0, &[]).unwrap();
    assert!((0..3).all(|c| rec.is_recording(c)));
    deliver(&mut rec, 0, &["a"]);
    deliver(&mut rec, 2, &["b", "c"]);
    let _ = rec.on_marker(0, id(1), || 0, &[]).unwrap();
    let _ = rec.on_marker(1, id(1), || 0, &[]).unwrap();
    let local = rec
        .on_marker(2, id(1), || 0, &[])
        .unwrap()
        .completed
        .unwrap();
    assert_eq!(bodies(&local.recorded[0]), ["a"]);
    assert!(local.recorded[1].is_empty());
    assert_eq!(bodies(&local.recorded[2]), ["b", "c"]);
}

// Receiving rule, first marker: "record own state; the state of Cki is empty; send marker(S) on
// every outgoing channel; start recording every other incoming channel".
#[test]
fn first_marker_records_state_empties_its_channel_sends_markers_records_the_others() {
    let mut rec = Rec::new(1, 3);
    deliver(&mut rec, 0, &["before"]);
    let p = rec.on_marker(0, id(7), || 5, &[2]).unwrap();
    assert!(p.send_markers);
    assert!(
        !rec.is_recording(0),
        "the marker's own channel is not recorded"
    );
    assert!(rec.is_recording(1) && rec.is_recording(2));
    deliver(&mut rec, 0, &["after-marker-same-channel"]);
    deliver(&mut rec, 1, &["x"]);
    let _ = rec.on_marker(1, id(7), || unreachable!(), &[]).unwrap();
    let local = rec
        .on_marker(2, id(7), || unreachable!(), &[])
        .unwrap()
        .completed
        .unwrap();
    assert_eq!(local.state, 5);
    assert!(!local.initiated);
    assert!(local.recorded[0].is_empty(), "Cki's state is empty");
    assert_eq!(bodies(&local.recorded[1]), ["x"]);
    assert_eq!(
        local.received,
        vec![1, 0, 0],
        "received counters at the cut"
    );
    assert_eq!(local.sent, vec![2]);
}

// Receiving rule, later marker: "stop recording Cki; its state is every application message
// that arrived on Cki since recording of Cki began, in arrival order".
#[test]
fn later_marker_closes_its_channel_with_what_arrived_in_order() {
    let mut rec = Rec::new(0, 2);
    let _ = rec.on_marker(0, id(1), || 0, &[]).unwrap();
    deliver(&mut rec, 1, &["m1", "m2", "m3"]);
    let local = rec
        .on_marker(1, id(1), || 0, &[])
        .unwrap()
        .completed
        .unwrap();
    assert_eq!(bodies(&local.recorded[1]), ["m1", "m2", "m3"]);
    assert_eq!(seqs(&local.recorded[1]), [1, 2, 3]);
    assert!(!rec.is_recording(1), "recording stops at the marker");
    deliver(&mut rec, 1, &["m4"]);
    assert_eq!(rec.logged_messages(), 0);
}

// "Otherwise (Pi already recorded its state for S, whether as initiator ...)": a marker
// returning to the initiator closes a channel and never records the state again.
#[test]
fn returning_marker_does_not_make_the_initiator_record_again() {
    let mut rec = Rec::new(0, 2);
    let _ = rec.initiate(id(1), 10, &[]).unwrap();
    let p = rec.on_marker(0, id(1), || 99, &[]).unwrap();
    assert!(!p.send_markers, "markers are sent once");
    let local = rec
        .on_marker(1, id(1), || 99, &[])
        .unwrap()
        .completed
        .unwrap();
    assert_eq!(local.state, 10);
}

// "Exactly one marker(S) crosses each channel": a second one is a protocol violation.
#[test]
fn second_marker_on_a_channel_is_an_error() {
    let mut rec = Rec::new(3, 2);
    let _ = rec.on_marker(0, id(1), || 0, &[]).unwrap();
    assert_eq!(
        rec.on_marker(0, id(1), || 0, &[]).unwrap_err(),
        MarkerError::DuplicateMarker {
            process: 3,
            snapshot: id(1),
            channel: 0
        }
    );
    let _ = rec.initiate(id(2), 0, &[]).unwrap();
    assert_eq!(
        rec.initiate(id(2), 0, &[]).unwrap_err(),
        MarkerError::DuplicateSnapshot {
            process: 3,
            snapshot: id(2)
        }
    );
}

// Completion: "a process with a single incoming channel completes on its first marker; a process
// with no incoming channel completes as soon as it records", checked after every rule.
#[test]
fn completion_is_checked_after_every_rule() {
    let mut single = Rec::new(1, 1);
    let p = single.on_marker(0, id(1), || 4, &[]).unwrap();
    assert!(p.send_markers);
    assert_eq!(p.completed.unwrap().state, 4);

    let mut alone = Rec::new(0, 0);
    let p = alone.initiate(id(1), 8, &[]).unwrap();
    assert!(p.send_markers);
    assert_eq!(p.completed.unwrap().state, 8);

    let mut two = Rec::new(0, 2);
    let p = two.initiate(id(1), 0, &[]).unwrap();
    assert!(p.completed.is_none());
    assert!(two
        .on_marker(1, id(1), || 0, &[])
        .unwrap()
        .completed
        .is_none());
    assert!(two
        .on_marker(0, id(1), || 0, &[])
        .unwrap()
        .completed
        .is_some());
}

// "A process forgets S once its part is complete".
#[test]
fn a_completed_snapshot_is_forgotten() {
    let mut rec = Rec::new(0, 2);
    let _ = rec.initiate(id(1), 0, &[]).unwrap();
    deliver(&mut rec, 0, &["a", "b"]);
    assert_eq!(rec.active_snapshots(), 1);
    assert!(rec.is_active(id(1)));
    let _ = rec.on_marker(0, id(1), || 0, &[]).unwrap();
    let _ = rec.on_marker(1, id(1), || 0, &[]).unwrap();
    assert_eq!(rec.active_snapshots(), 0);
    assert!(!rec.is_active(id(1)));
    assert_eq!(rec.logged_messages(), 0);
    assert!((0..2).all(|c| !rec.is_recording(c)));
}

// "an application message that arrives on Cki is ... appended to Cki's recorded state for S (for
// every snapshot still recording Cki)". Stored once: both recordings share the same allocation.
#[test]
fn a_message_is_recorded_for_every_snapshot_recording_its_channel_and_stored_once() {
    let mut rec = Rec::new(0, 2);
    let _ = rec.initiate(id(1), 0, &[]).unwrap();
    deliver(&mut rec, 0, &["early"]);
    let _ = rec.on_marker(1, id(2), || 0, &[]).unwrap(); // S2 records channel 0 from now on
    deliver(&mut rec, 0, &["shared"]);
    assert_eq!(
        rec.logged_messages(),
        2,
        "one copy per message, not per snapshot"
    );
    let _ = rec.on_marker(1, id(1), || 0, &[]).unwrap();
    let s1 = rec
        .on_marker(0, id(1), || 0, &[])
        .unwrap()
        .completed
        .unwrap();
    let s2 = rec
        .on_marker(0, id(2), || 0, &[])
        .unwrap()
        .completed
        .unwrap();
    assert_eq!(bodies(&s1.recorded[0]), ["early", "shared"]);
    assert_eq!(bodies(&s2.recorded[0]), ["shared"]);
    assert!(Arc::ptr_eq(
        &s1.recorded[0][1].message,
        &s2.recorded[0][0].message
    ));
    assert_eq!(rec.logged_messages(), 0);
}

// "Snapshots with different ids never affect each other, however they overlap."
#[test]
fn overlapping_snapshots_do_not_affect_each_other() {
    let mut rec = Rec::new(0, 2);
    let _ = rec.initiate(id(1), 1, &[0]).unwrap();
    deliver(&mut rec, 0, &["a"]);
    deliver(&mut rec, 1, &["b"]);
    let _ = rec.on_marker(0, id(2), || 2, &[1]).unwrap();
    deliver(&mut rec, 0, &["c"]);
    deliver(&mut rec, 1, &["d"]);
    // S1 ends first on channel 0, S2 on channel 1.
    let _ = rec.on_marker(0, id(1), || unreachable!(), &[]).unwrap();
    let s2 = rec
        .on_marker(1, id(2), || unreachable!(), &[])
        .unwrap()
        .completed
        .unwrap();
    deliver(&mut rec, 1, &["e"]);
    let s1 = rec
        .on_marker(1, id(1), || unreachable!(), &[])
        .unwrap()
        .completed
        .unwrap();
    assert_eq!((s1.state, s2.state), (1, 2));
    assert_eq!(bodies(&s1.recorded[0]), ["a", "c"]);
    assert_eq!(bodies(&s1.recorded[1]), ["b", "d", "e"]);
    assert!(s2.recorded[0].is_empty());
    assert_eq!(bodies(&s2.recorded[1]), ["d"]);
    assert_eq!(
        (s1.received.clone(), s2.received.clone()),
        (vec![0, 0], vec![1, 1])
    );
    assert_eq!(rec.logged_messages(), 0);
}

#[test]
fn log_is_trimmed_to_what_open_recordings_need() {
    let mut rec = Rec::new(0, 2);
    // A chain of overlapping snapshots keeps channel 0 recorded all the time.
    let _ = rec.initiate(id(1), 0, &[]).unwrap();
    deliver(&mut rec, 0, &["a", "b"]);
    let _ = rec.initiate(id(2), 0, &[]).unwrap();
    deliver(&mut rec, 0, &["c"]);
    let _ = rec.on_marker(0, id(1), || 0, &[]).unwrap();
    assert_eq!(rec.logged_messages(), 1, "only what S2 still needs");
    let _ = rec.initiate(id(3), 0, &[]).unwrap();
    deliver(&mut rec, 0, &["d"]);
    let s2_channel = {
        let _ = rec.on_marker(0, id(2), || 0, &[]).unwrap();
        rec.logged_messages()
    };
    assert_eq!(s2_channel, 1, "only what S3 still needs");
    for s in [1, 2, 3] {
        let _ = rec.on_marker(1, id(s), || 0, &[]).unwrap();
    }
    let s3 = rec
        .on_marker(0, id(3), || 0, &[])
        .unwrap()
        .completed
        .unwrap();
    assert_eq!(bodies(&s3.recorded[0]), ["d"]);
    assert_eq!(rec.active_snapshots(), 0);
    assert_eq!(rec.logged_messages(), 0);
}

#[test]
fn aborting_leaves_nothing_behind() {
    let mut rec = Rec::new(0, 2);
    let _ = rec.initiate(id(1), 0, &[]).unwrap();
    let _ = rec.on_marker(0, id(2), || 0, &[]).unwrap();
    deliver(&mut rec, 1, &["a", "b"]);
    assert_eq!(rec.logged_messages(), 2);
    assert_eq!(rec.abort_all(), 2);
    assert_eq!(rec.active_snapshots(), 0);
    assert_eq!(rec.logged_messages(), 0);
    assert!(!rec.is_recording(0) && !rec.is_recording(1));
    deliver(&mut rec, 1, &["c"]);
    assert_eq!(rec.logged_messages(), 0);
}

#[test]
fn log_keeps_what_the_oldest_open_recording_needs_whatever_order_they_close_in() {
    let mut rec = Rec::new(0, 2);
    // Recordings of channel 0 from three different points; the middle one closes first, then
    // the oldest, then the youngest.
    let _ = rec.initiate(id(1), 0, &[]).unwrap();
    deliver(&mut rec, 0, &["a", "b"]);
    let _ = rec.initiate(id(2), 0, &[]).unwrap();
    deliver(&mut rec, 0, &["c"]);
    let _ = rec.initiate(id(3), 0, &[]).unwrap();
    deliver(&mut rec, 0, &["d"]);
    let _ = rec.on_marker(0, id(2), || 0, &[]).unwrap();
    assert_eq!(rec.logged_messages(), 4, "S1 still needs everything");
    let _ = rec.on_marker(0, id(1), || 0, &[]).unwrap();
    assert_eq!(
        rec.logged_messages(),
        1,
        "S2 closed first: only S3's part is left"
    );
    deliver(&mut rec, 0, &["e"]);
    let _ = rec.on_marker(0, id(3), || 0, &[]).unwrap();
    assert_eq!(rec.logged_messages(), 0);
    assert!(!rec.is_recording(0));
    let parts: Vec<_> = [1, 2, 3]
        .map(|s| {
            rec.on_marker(1, id(s), || 0, &[])
                .unwrap()
                .completed
                .unwrap()
        })
        .into();
    assert_eq!(bodies(&parts[0].recorded[0]), ["a", "b", "c", "d"]);
    assert_eq!(bodies(&parts[1].recorded[0]), ["c", "d"]);
    assert_eq!(bodies(&parts[2].recorded[0]), ["d", "e"]);
    // A fresh recording after everything closed starts an empty log at the current arrival.
    let _ = rec.initiate(id(4), 0, &[]).unwrap();
    deliver(&mut rec, 0, &["f"]);
    let _ = rec.on_marker(1, id(4), || 0, &[]).unwrap();
    let s4 = rec
        .on_marker(0, id(4), || 0, &[])
        .unwrap()
        .completed
        .unwrap();
    assert_eq!(seqs(&s4.recorded[0]), [6]);
}

#[test]
fn many_snapshots_at_once_each_record_exactly_their_own_part() {
    // K recordings of one channel open at once, each from a different point, closed in an order
    // unrelated to their starts: each must get exactly the messages between its start and its
    // marker, and the log must end empty. (Fewer under Miri, which runs this far slower.)
    const K: u64 = if cfg!(miri) { 100 } else { 2_000 };
    let mut rec: Recorder<u64, u64> = Recorder::new(0, 1);
    let mut seq = 0;
    for s in 0..K {
        let _ = rec.initiate(id(s as u128), s, &[]).unwrap();
        seq += 1;
        rec.on_message(0, seq, &seq);
    }
    for k in 0..K {
        // A permutation of 0..K (7919 is prime, so coprime with K).
        let s = (k * 7919) % K;
        if k % 3 == 0 {
            seq += 1;
            rec.on_message(0, seq, &seq);
        }
        let part = rec
            .on_marker(0, id(s as u128), || unreachable!(), &[])
            .unwrap()
            .completed
            .unwrap();
        let got: Vec<u64> = part.recorded[0].iter().map(|m| m.seq).collect();
        assert_eq!(got, (s + 1..=seq).collect::<Vec<_>>(), "snapshot {s}");
        assert_eq!(part.received, [s]);
    }
    assert_eq!(rec.active_snapshots(), 0);
    assert_eq!(rec.logged_messages(), 0);
}

// Not a rule: the layout `Recording`'s documentation counts on (two channels a cache line, and
// no heap behind a channel's opening and closing of one recording at a time).
#[test]
fn a_channels_hot_recording_state_is_32_bytes_and_one_recording_stays_off_the_heap() {
    assert_eq!(std::mem::size_of::<Recording>(), 32);
    let mut rec = Rec::new(0, 3);
    let _ = rec.initiate(id(1), 0, &[0, 0]).unwrap();
    deliver(&mut rec, 0, &["a"]);
    let _ = rec.on_marker(0, id(1), || 0, &[0, 0]).unwrap();
    assert!(
        rec.recording.iter().all(|r| r.open.later_unallocated()),
        "one snapshot at a time never allocates a channel's later starts"
    );
}

//! Encodes and decodes the bank's transfer as the cluster frames it (`Frame::Message`: channel,
//! number, message) with each serde codec considered, and prints bytes per frame and time per
//! encode and decode. Run: see Cargo.toml.

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The bank's message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Transfer(u64);

/// The cluster's frame, as far as a message goes (the variant's index is encoded as in
/// `src/cluster/wire.rs`, where `Message` is the first variant).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Frame<M> {
    Message { channel: u32, seq: u64, message: M },
    Marker { channel: u32, snapshot: [u8; 16], initiator: u32 },
}

const N: u64 = 2_000_000;

/// Bank-like frames: 56 channels (complete graph on 8), numbers counting up, amounts below 1000.
fn frames() -> Vec<Frame<Transfer>> {
    let mut r = 0x9E37_79B9_7F4A_7C15u64;
    (0..N)
        .map(|i| {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            Frame::Message {
                channel: (r % 56) as u32,
                seq: i / 56 + 1,
                message: Transfer(r % 1000),
            }
        })
        .collect()
}

fn bench(
    name: &str,
    encode: impl Fn(&Frame<Transfer>, &mut Vec<u8>),
    decode: impl Fn(&[u8]) -> Frame<Transfer>,
) {
    let frames = frames();
    let mut buf = Vec::with_capacity(64);
    let mut bytes = 0usize;
    let t = Instant::now();
    for f in &frames {
        buf.clear();
        encode(f, &mut buf);
        bytes += buf.len();
        std::hint::black_box(&buf);
    }
    let encode_ns = t.elapsed().as_nanos() as f64 / N as f64;
    let encoded: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut b = Vec::new();
            encode(f, &mut b);
            b
        })
        .collect();
    let t = Instant::now();
    for b in &encoded {
        std::hint::black_box(decode(b));
    }
    let decode_ns = t.elapsed().as_nanos() as f64 / N as f64;
    assert_eq!(decode(&encoded[5]), frames[5], "{name} round-trips");
    println!(
        "{name:10} {:5.1} bytes/frame  encode {encode_ns:6.1} ns  decode {decode_ns:6.1} ns",
        bytes as f64 / N as f64
    );
}

/// What postcard appends to (the cluster's `wire::encode` uses the same).
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes)
    }
}

fn main() {
    for round in 1..=2 {
        println!("round {round}");
        bench(
            "postcard",
            |f, b| {
                postcard::to_extend(f, Append(b)).unwrap();
            },
            |b| postcard::from_bytes(b).unwrap(),
        );
        bench(
            "bitcode",
            |f, b| b.extend_from_slice(&bitcode::serialize(f).unwrap()),
            |b| bitcode::deserialize(b).unwrap(),
        );
        bench(
            "rmp-serde",
            |f, b| rmp_serde::encode::write(b, f).unwrap(),
            |b| rmp_serde::from_slice(b).unwrap(),
        );
        bench(
            "bincode 1",
            |f, b| bincode::serialize_into(&mut *b, f).unwrap(),
            |b| bincode::deserialize(b).unwrap(),
        );
        bench(
            "ciborium",
            |f, b| ciborium::into_writer(f, &mut *b).unwrap(),
            |b| ciborium::from_reader(b).unwrap(),
        );
    }
}

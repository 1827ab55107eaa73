//! Every connection between nodes, authenticated and encrypted with the Noise protocol (`snow`,
//! pattern XX: see `keys.rs`), so that only the cluster's nodes join and nobody on the network
//! reads or changes a frame.
//!
//! After the six-byte preamble each way (the wire format's version, in the clear), the three
//! handshake messages, each `u16` length then bytes: the opener's ephemeral key; the acceptor's
//! ephemeral and (encrypted) static key; the opener's (encrypted) static key with its `Hello`
//! as payload. Each side then knows the other's static key: the opener checks it is the key of
//! the node it dialled, the acceptor which node it is (and that its `Hello` says so). From then
//! on the stream is transport messages: a `u16` length, then at most 65,535 bytes of
//! ChaCha20-Poly1305 ciphertext, each carrying a piece of the frames (`wire.rs`) in order.

use std::io::{self, Read, Write};

use snow::{HandshakeState, TransportState};

use super::keys::{noise_builder, NodeKeys};

/// Binds the handshake to this protocol: a peer speaking Noise for anything else fails it.
const PROLOGUE: &[u8] = b"chandy-lamport cluster";

/// The most a Noise message may be, and what is left of it for plaintext.
const MAX_MESSAGE: usize = 65_535;
const MAX_PLAIN: usize = MAX_MESSAGE - 16;

fn noise_error(e: snow::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn write_message(w: &mut impl Write, message: &[u8]) -> io::Result<()> {
    let len = u16::try_from(message.len()).expect("Noise messages fit in 16 bits");
    let mut out = Vec::with_capacity(2 + message.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(message);
    w.write_all(&out)
}

fn read_message(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut len = [0; 2];
    r.read_exact(&mut len)?;
    buf.resize(u16::from_le_bytes(len) as usize, 0);
    r.read_exact(buf)
}

fn handshake(keys: &NodeKeys, initiator: bool) -> io::Result<HandshakeState> {
    let builder = noise_builder()
        .local_private_key(keys.private())
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(noise_error)?;
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(noise_error)
}

/// The opener's handshake, to node `peer`: returns the transport once the acceptor has proven
/// it holds `peer`'s key, and has been sent `hello` (encrypted, in the last handshake message).
pub(crate) fn open(
    stream: &mut (impl Read + Write),
    keys: &NodeKeys,
    peer: usize,
    hello: &[u8],
) -> io::Result<TransportState> {
    let mut hs = handshake(keys, true)?;
    let mut out = vec![0; MAX_MESSAGE];
    let mut incoming = Vec::new();
    let mut payload = vec![0; MAX_MESSAGE];
    let n = hs.write_message(&[], &mut out).map_err(noise_error)?;
    write_message(stream, &out[..n])?;
    read_message(stream, &mut incoming)?;
    hs.read_message(&incoming, &mut payload)
        .map_err(noise_error)?;
    let expected = keys.public(peer);
    if hs.get_remote_static() != expected {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the node that answered does not hold node {peer}'s key"),
        ));
    }
    if hello.len() > MAX_PLAIN {
        return Err(io::Error::other("the hello is too long for one message"));
    }
    let n = hs.write_message(hello, &mut out).map_err(noise_error)?;
    write_message(stream, &out[..n])?;
    hs.into_transport_mode().map_err(noise_error)
}

/// The acceptor's handshake: returns the transport, the node whose key the opener proved it
/// holds, and the opener's hello. A key that is no node's of this cluster is refused here.
pub(crate) fn accept(
    stream: &mut (impl Read + Write),
    keys: &NodeKeys,
) -> io::Result<(TransportState, usize, Vec<u8>)> {
    let mut hs = handshake(keys, false)?;
    let mut out = vec![0; MAX_MESSAGE];
    let mut incoming = Vec::new();
    let mut payload = vec![0; MAX_MESSAGE];
    read_message(stream, &mut incoming)?;
    hs.read_message(&incoming, &mut payload)
        .map_err(noise_error)?;
    let n = hs.write_message(&[], &mut out).map_err(noise_error)?;
    write_message(stream, &out[..n])?;
    read_message(stream, &mut incoming)?;
    let len = hs
        .read_message(&incoming, &mut payload)
        .map_err(noise_error)?;
    let node = hs
        .get_remote_static()
        .and_then(|key| keys.node_of(key))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "its key is no node's of this cluster",
            )
        })?;
    payload.truncate(len);
    Ok((
        hs.into_transport_mode().map_err(noise_error)?,
        node,
        payload,
    ))
}

/// Encrypts `plain` into transport messages appended to `out`.
pub(crate) fn seal(
    transport: &mut TransportState,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let end = seal_at(transport, plain, out, out.len())?;
    out.truncate(end);
    Ok(())
}

/// Encrypts `plain` into transport messages written into `out` from `at` on, growing `out`
/// only where it is too short; returns where they end. A writer that keeps one buffer at its
/// longest and seals into it from 0 each round zeroes no memory after the first rounds (a
/// `resize` per round did: the sealing's `memset` showed in the profile).
pub(crate) fn seal_at(
    transport: &mut TransportState,
    plain: &[u8],
    out: &mut Vec<u8>,
    mut at: usize,
) -> io::Result<usize> {
    for piece in plain.chunks(MAX_PLAIN) {
        let room = at + 2 + piece.len() + 16;
        if out.len() < room {
            out.resize(room, 0);
        }
        let n = transport
            .write_message(piece, &mut out[at + 2..room])
            .map_err(noise_error)?;
        let len = u16::try_from(n).expect("at most 65,535 bytes");
        out[at..at + 2].copy_from_slice(&len.to_le_bytes());
        at += 2 + n;
    }
    Ok(at)
}

/// How many bytes of the plaintext given to [`seal_at`] (from 0) the first `written` bytes of
/// its messages carry whole: a peer can open only a whole message, so the rest of a message
/// cut by a failed write never reached it. (Every message but the last carries `MAX_PLAIN`.)
pub(crate) fn plain_in_whole_messages(written: usize) -> usize {
    written / (2 + MAX_PLAIN + 16) * MAX_PLAIN
}

/// Reads transport messages from `inner` and hands out their plaintext, in order, as a stream:
/// the frame reader reads it as it would read a plain connection. A message that fails to
/// decrypt (changed, or not from the key the handshake proved) is an error.
pub(crate) struct Opened<R> {
    inner: R,
    transport: TransportState,
    cipher: Vec<u8>,
    /// The last message's plaintext is `plain[at..end]`. Both buffers stay at the longest a
    /// message can be: re-zeroing 64 KiB for each message (a `resize` after a `truncate`) was
    /// the readers' largest `memset`.
    plain: Vec<u8>,
    at: usize,
    end: usize,
}

impl<R: Read> Opened<R> {
    pub(crate) fn new(inner: R, transport: TransportState) -> Self {
        Opened {
            inner,
            transport,
            cipher: vec![0; MAX_MESSAGE],
            plain: vec![0; MAX_MESSAGE],
            at: 0,
            end: 0,
        }
    }

    /// The transport back (the handshake's last step reads one message through `Opened`, then
    /// hands the transport to the thread that writes).
    pub(crate) fn into_transport(self) -> TransportState {
        self.transport
    }

    /// What is left of the last message's plaintext, not yet read.
    #[inline]
    pub(crate) fn unread(&self) -> &[u8] {
        &self.plain[self.at..self.end]
    }

    /// Marks the first `n` bytes of [`unread`](Opened::unread) read.
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.at);
        self.at = (self.at + n).min(self.end);
    }

    /// With everything read, reads and decrypts the next message that has any plaintext, so
    /// that [`unread`](Opened::unread) holds it; `Ok(false)` at the end of the stream between
    /// two messages. Does nothing while something is unread.
    pub(crate) fn fill(&mut self) -> io::Result<bool> {
        while self.at == self.end {
            if !self.next_message()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads and decrypts the next message; `Ok(false)` at the end of the stream between two.
    fn next_message(&mut self) -> io::Result<bool> {
        let mut len = [0; 2];
        match self.inner.read(&mut len[..1]) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        self.inner.read_exact(&mut len[1..])?;
        let cipher = &mut self.cipher[..u16::from_le_bytes(len) as usize];
        self.inner.read_exact(cipher)?;
        self.end = self
            .transport
            .read_message(cipher, &mut self.plain)
            .map_err(noise_error)?;
        self.at = 0;
        Ok(true)
    }
}

impl<R: Read> Read for Opened<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.fill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.end - self.at);
        buf[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Encrypts one message for the transport (the acceptor's one answer, its `Reply`).
pub(crate) fn send_one(
    stream: &mut impl Write,
    transport: &mut TransportState,
    plain: &[u8],
) -> io::Result<()> {
    let mut out = Vec::new();
    seal(transport, plain, &mut out)?;
    stream.write_all(&out)
}

// Real sockets: not under Miri, which has none.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::super::keys::NOISE;
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// What the acceptor's side of a handshake gives.
    type Accepted = io::Result<(TransportState, usize, Vec<u8>)>;

    /// Both ends of a connection through a real socket, handshaken.
    fn pair(
        opener: &NodeKeys,
        acceptor: NodeKeys,
        peer: usize,
    ) -> (io::Result<TransportState>, Accepted) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let accepting = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            accept(&mut s, &acceptor)
        });
        let opened = {
            // Dropped before the join: an opener that gave up closes, and the acceptor sees it.
            let mut s = TcpStream::connect(address).unwrap();
            open(&mut s, opener, peer, b"hello")
        };
        (opened, accepting.join().unwrap())
    }

    #[test]
    fn members_prove_who_they_are_and_talk_privately() {
        let keys = NodeKeys::generate(3).unwrap();
        let (opened, accepted) = pair(&keys[0], keys[2].clone(), 2);
        let (mut to, (from, node, hello)) = (opened.unwrap(), accepted.unwrap());
        assert_eq!((node, hello.as_slice()), (0, &b"hello"[..]));
        // 200,000 bytes: several transport messages, read back in order.
        let plain: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut sealed = Vec::new();
        seal(&mut to, &plain, &mut sealed).unwrap();
        // Not the plaintext: its first bytes are nowhere at the start of the ciphertext.
        assert!(sealed[2..66].windows(8).all(|w| w != &plain[..8]));
        let mut opened = Opened::new(&sealed[..], from);
        let mut back = Vec::new();
        opened.read_to_end(&mut back).unwrap();
        assert!(back == plain, "the plaintext comes back as it was sent");
        // A byte changed on the way is caught.
        let (opened, accepted) = pair(&keys[1], keys[0].clone(), 0);
        let (mut to, from) = (opened.unwrap(), accepted.unwrap().0);
        let mut sealed = Vec::new();
        seal(&mut to, b"transfer 10 to branch 3", &mut sealed).unwrap();
        sealed[10] ^= 1;
        let mut reread = Vec::new();
        let tampered = Opened::new(&sealed[..], from).read_to_end(&mut reread);
        assert_eq!(tampered.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert!(reread.is_empty());
    }

    /// A write that fails part-way leaves the peer the whole messages before the cut, no
    /// more: `plain_in_whole_messages` says how much plaintext that is.
    #[test]
    fn a_cut_stream_opens_to_its_whole_messages() {
        let keys = NodeKeys::generate(2).unwrap();
        let (opened, accepted) = pair(&keys[0], keys[1].clone(), 1);
        let (mut to, from) = (opened.unwrap(), accepted.unwrap().0);
        let plain = vec![9u8; 3 * MAX_PLAIN + 5];
        let mut sealed = Vec::new();
        let end = seal_at(&mut to, &plain, &mut sealed, 0).unwrap();
        let whole = 2 + MAX_PLAIN + 16;
        assert_eq!(end, 3 * whole + 2 + 5 + 16);
        assert_eq!(plain_in_whole_messages(0), 0);
        assert_eq!(plain_in_whole_messages(whole - 1), 0);
        assert_eq!(plain_in_whole_messages(2 * whole), 2 * MAX_PLAIN);
        assert_eq!(plain_in_whole_messages(3 * whole - 1), 2 * MAX_PLAIN);
        // What a reader opens from the stream cut inside the third message.
        let mut opened = Opened::new(&sealed[..3 * whole - 1], from);
        let mut back = Vec::new();
        let _ = opened.read_to_end(&mut back);
        assert_eq!(back.len(), plain_in_whole_messages(3 * whole - 1));
    }

    /// `ring`'s cipher (what the nodes use: `keys::noise_builder`) and snow's pure-Rust one
    /// write the same bytes: a handshake between the two completes, and each side opens what
    /// the other sealed, over several transport messages each way. A node built either way
    /// talks with the other.
    #[test]
    fn the_cipher_from_ring_speaks_with_the_pure_rust_one() {
        let keys = NodeKeys::generate(2).unwrap();
        let mut fast = noise_builder()
            .local_private_key(keys[0].private())
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut pure = snow::Builder::with_resolver(
            NOISE.parse().unwrap(),
            Box::new(snow::resolvers::DefaultResolver),
        )
        .local_private_key(keys[1].private())
        .unwrap()
        .build_responder()
        .unwrap();
        let (mut message, mut payload) = (vec![0; MAX_MESSAGE], vec![0; MAX_MESSAGE]);
        for turn in 0..3 {
            let (from, to) = if turn % 2 == 0 {
                (&mut fast, &mut pure)
            } else {
                (&mut pure, &mut fast)
            };
            let n = from.write_message(&[], &mut message).unwrap();
            to.read_message(&message[..n], &mut payload).unwrap();
        }
        let mut fast = fast.into_transport_mode().unwrap();
        let mut pure = pure.into_transport_mode().unwrap();
        let plain: Vec<u8> = (0..150_000u32).map(|i| (i * 7) as u8).collect();
        let (mut by_fast, mut by_pure) = (Vec::new(), Vec::new());
        seal(&mut fast, &plain, &mut by_fast).unwrap();
        seal(&mut pure, &plain, &mut by_pure).unwrap();
        for (sealed, reader) in [(by_fast, pure), (by_pure, fast)] {
            let mut back = Vec::new();
            Opened::new(&sealed[..], reader)
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == plain, "the plaintext comes back as it was sent");
        }
    }

    #[test]
    fn strangers_and_impostors_are_refused() {
        let ours = NodeKeys::generate(3).unwrap();
        let theirs = NodeKeys::generate(3).unwrap();
        // A stranger who knows our public keys but holds no private key of ours.
        let stranger = NodeKeys {
            private: *theirs[0].private().first_chunk().unwrap(),
            ..ours[0].clone()
        };
        let (_, accepted) = pair(&stranger, ours[1].clone(), 1);
        assert_eq!(
            accepted.unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        // Dialling node 1, but the node that answers holds node 2's key.
        let (opened, _) = pair(&ours[0], ours[2].clone(), 1);
        assert_eq!(opened.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }
}

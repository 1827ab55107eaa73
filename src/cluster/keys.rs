//! Who belongs to a cluster: one X25519 key pair per node. A node proves it is node I by the
//! Noise handshake (`secure.rs`), which only the holder of node I's private key can complete as
//! node I; it knows the others by their public keys.
//!
//! A key folder (`keys = "DIR"` in the cluster file, made once by [`write_keys`]) holds, for
//! each node I, `node-I.key` (its private key, hex; readable by its owner only) and `node-I.pub`
//! (its public key, hex). Each machine needs its own node's `.key` and every `.pub`: never
//! another node's `.key`.

use std::path::{Path, PathBuf};

use crate::error::ClusterError;

/// The Noise protocol every connection speaks: the XX pattern (each side sends its static key,
/// encrypted, during the handshake; neither needs to know which node calls before it does),
/// X25519, ChaCha20-Poly1305, BLAKE2s.
pub(crate) const NOISE: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// A Noise builder for [`NOISE`], with the cipher from `ring`: `ring`'s resolver first, snow's
/// default one behind it for X25519 and BLAKE2s, which `ring` does not offer to snow.
///
/// Why `ring`: its ChaCha20-Poly1305 is hand-written assembly chosen at run time for the
/// processor. The pure-Rust one of snow's default resolver, built without `-C
/// target-feature=+avx2` (as a library is), calls its AVX2 intrinsics as functions: at 3 nodes
/// x 16 processes the links' six readers ran 630M instructions for a million deliveries with it
/// and 357M with `ring`, their writers 430M and 168M (callgrind, BENCHMARKS.md, twenty-sixth
/// round). The bytes on the wire are the same (a test has each open the other's), and `ring`
/// was built already: snow's `std` feature turns it on.
///
/// Under Miri, which cannot run `ring`'s assembly, the default resolver alone.
pub(crate) fn noise_builder() -> snow::Builder<'static> {
    use snow::resolvers::DefaultResolver;
    let params = NOISE.parse().expect("a valid Noise pattern");
    #[cfg(not(miri))]
    let resolver = snow::resolvers::FallbackResolver::new(
        Box::new(snow::resolvers::RingResolver),
        Box::new(DefaultResolver),
    );
    #[cfg(miri)]
    let resolver = DefaultResolver;
    snow::Builder::with_resolver(params, Box::new(resolver))
}

/// Bytes in a key.
const KEY: usize = 32;

/// What one node holds: its own private key and every node's public key.
#[derive(Clone)]
pub struct NodeKeys {
    pub(crate) node: usize,
    pub(crate) private: [u8; KEY],
    pub(crate) publics: Vec<[u8; KEY]>,
}

impl std::fmt::Debug for NodeKeys {
    // Never the private key: not in a log, not in a panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeys")
            .field("node", &self.node)
            .field("nodes", &self.publics.len())
            .finish_non_exhaustive()
    }
}

impl NodeKeys {
    /// Fresh keys for a cluster of `nodes` nodes, in memory: one `NodeKeys` per node (for
    /// tests, and for throwaway clusters; files are for [`write_keys`]).
    pub fn generate(nodes: usize) -> Result<Vec<NodeKeys>, ClusterError> {
        let pairs: Vec<([u8; KEY], [u8; KEY])> =
            (0..nodes).map(|_| keypair()).collect::<Result<_, _>>()?;
        let publics: Vec<[u8; KEY]> = pairs.iter().map(|(_, public)| *public).collect();
        Ok(pairs
            .into_iter()
            .enumerate()
            .map(|(node, (private, _))| NodeKeys {
                node,
                private,
                publics: publics.clone(),
            })
            .collect())
    }

    /// Node `node`'s keys, read from folder `dir` of a cluster of `nodes` nodes: its
    /// `node-{node}.key` and every `node-I.pub`.
    pub fn load(dir: &Path, node: usize, nodes: usize) -> Result<NodeKeys, ClusterError> {
        let key_file = dir.join(format!("node-{node}.key"));
        let private = read_key(&key_file)?;
        #[cfg(unix)]
        {
            // Said, not refused: the key works, but whoever else can read it can be this node.
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(&key_file) {
                if meta.permissions().mode() & 0o077 != 0 {
                    log::warn!(
                        "{}: a private key others can read (mode {:o}): whoever reads it can be \
                         node {node}; chmod 600 it",
                        key_file.display(),
                        meta.permissions().mode() & 0o777
                    );
                }
            }
        }
        let publics = (0..nodes)
            .map(|k| read_key(&dir.join(format!("node-{k}.pub"))))
            .collect::<Result<Vec<_>, _>>()?;
        // A private key that is not the one of the node's public key would pass no handshake:
        // said here, naming the files, rather than as every peer refusing this node.
        if publics.get(node) != Some(&public_of(&private)?) {
            return Err(ClusterError::Keys {
                message: format!(
                    "{}: not the private key of {} (the files are of different key pairs)",
                    key_file.display(),
                    dir.join(format!("node-{node}.pub")).display()
                ),
            });
        }
        Ok(NodeKeys {
            node,
            private,
            publics,
        })
    }

    /// The node these keys are for.
    pub fn node(&self) -> usize {
        self.node
    }

    /// How many nodes the keys know.
    pub fn nodes(&self) -> usize {
        self.publics.len()
    }

    pub(crate) fn private(&self) -> &[u8] {
        &self.private
    }

    /// Node `node`'s public key.
    pub(crate) fn public(&self, node: usize) -> Option<&[u8]> {
        self.publics.get(node).map(|k| &k[..])
    }

    /// The node whose public key is `key`, if any.
    pub(crate) fn node_of(&self, key: &[u8]) -> Option<usize> {
        self.publics.iter().position(|k| k[..] == *key)
    }
}

/// A fresh X25519 key pair (private, public).
fn keypair() -> Result<([u8; KEY], [u8; KEY]), ClusterError> {
    let pair = noise_builder()
        .generate_keypair()
        .map_err(|e| ClusterError::Keys {
            message: format!("cannot make a key pair: {e}"),
        })?;
    let mut private = [0; KEY];
    let mut public = [0; KEY];
    private.copy_from_slice(&pair.private);
    public.copy_from_slice(&pair.public);
    Ok((private, public))
}

/// The X25519 public key of `private`.
fn public_of(private: &[u8; KEY]) -> Result<[u8; KEY], ClusterError> {
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    let mut dh = DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .ok_or_else(|| ClusterError::Keys {
            message: "no X25519 in this build of snow".to_string(),
        })?;
    dh.set(private);
    let mut public = [0; KEY];
    public.copy_from_slice(dh.pubkey());
    Ok(public)
}

/// Makes the key folder of a cluster of `nodes` nodes (see the module documentation). Refuses
/// to overwrite keys already there.
pub fn write_keys(dir: &Path, nodes: usize) -> Result<(), ClusterError> {
    let failed = |path: &Path, e: std::io::Error| ClusterError::Keys {
        message: format!("{}: {e}", path.display()),
    };
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    for node in 0..nodes {
        for ext in ["key", "pub"] {
            let path = dir.join(format!("node-{node}.{ext}"));
            if path.exists() {
                return Err(ClusterError::Keys {
                    message: format!(
                        "{} exists: keys are made once; remove the folder's keys to make new ones",
                        path.display()
                    ),
                });
            }
        }
    }
    for node in 0..nodes {
        let (private, public) = keypair()?;
        let key = dir.join(format!("node-{node}.key"));
        write_private(&key, &hex(&private)).map_err(|e| failed(&key, e))?;
        let pubfile = dir.join(format!("node-{node}.pub"));
        std::fs::write(&pubfile, hex(&public)).map_err(|e| failed(&pubfile, e))?;
    }
    Ok(())
}

/// Writes a private key readable by its owner only (where the system has owners).
fn write_private(path: &PathBuf, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    options.open(path)?.write_all(text.as_bytes())
}

fn hex(key: &[u8; KEY]) -> String {
    let mut s: String = key.iter().map(|b| format!("{b:02x}")).collect();
    s.push('\n');
    s
}

fn read_key(path: &Path) -> Result<[u8; KEY], ClusterError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClusterError::Keys {
        message: format!("{}: {e}", path.display()),
    })?;
    let text = text.trim();
    let bad = || ClusterError::Keys {
        message: format!("{}: not a key (64 hex digits)", path.display()),
    };
    if text.len() != 2 * KEY || !text.is_ascii() {
        return Err(bad());
    }
    let mut key = [0; KEY];
    for (k, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * k..2 * k + 2], 16).map_err(|_| bad())?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_keys_load_back_and_are_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("cl-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_keys(&dir, 3).unwrap();
        let one = NodeKeys::load(&dir, 1, 3).unwrap();
        let two = NodeKeys::load(&dir, 2, 3).unwrap();
        assert_eq!(one.public(2), two.public(2));
        assert_ne!(one.private(), two.private());
        assert_eq!(one.node_of(one.public(0).unwrap()), Some(0));
        assert!(matches!(
            write_keys(&dir, 3),
            Err(ClusterError::Keys { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("node-1.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "a private key is its owner's only");
        }
        // The private key appears nowhere in what is printed of the keys.
        assert!(!format!("{one:?}").contains(&hex(&one.private)[..8]));
        // Node 1 given node 2's private key: refused at load, naming the files.
        // (Read and written, not `fs::copy`: Miri, which runs these tests, has no
        // `copy_file_range`.)
        let two = std::fs::read(dir.join("node-2.key")).unwrap();
        std::fs::write(dir.join("node-1.key"), two).unwrap();
        match NodeKeys::load(&dir, 1, 3) {
            Err(e @ ClusterError::Keys { .. }) => {
                let said = e.to_string();
                assert!(
                    said.contains("node-1.key: not the private key of"),
                    "{said}"
                );
                assert!(said.contains("node-1.pub"), "{said}");
            }
            other => panic!("{other:?}"),
        }
        assert!(NodeKeys::load(&dir, 2, 3).is_ok());
        std::fs::write(dir.join("node-0.pub"), "not hex").unwrap();
        assert!(matches!(
            NodeKeys::load(&dir, 1, 3),
            Err(ClusterError::Keys { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

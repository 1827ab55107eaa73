//! The cluster file: which node runs which processes, and where each is reached.
//!
//! ```toml
//! keys = "keys"                 # the folder of the cluster's keys, beside this file
//!
//! [[node]]
//! address = "10.0.0.1:7101"     # where the other nodes connect to this one
//! processes = [0, 3, 6]
//!
//! [[node]]
//! address = "10.0.0.2:7101"
//! listen = "0.0.0.0:7101"       # optional: what this node binds, when it differs
//! processes = [1, 4]
//! ```
//!
//! Node I is the I-th `[[node]]` table (from 0). Every process of the topology must be on
//! exactly one node; no two nodes may share an address. Unknown keys are refused, so a
//! misspelt one does not pass silently.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ClusterError;
use crate::topology::ProcessId;

/// One node of a cluster file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Where the other nodes connect to it: `host:port`.
    pub address: String,
    /// What it binds to listen, if not `address` (behind NAT, in a container).
    pub listen: Option<String>,
    /// The processes it runs.
    pub processes: Vec<ProcessId>,
    /// The line of its `address` and of its `processes` in the file, for error messages.
    lines: (Option<usize>, Option<usize>),
}

impl NodeConfig {
    /// A node reached at `address`, running `processes`.
    pub fn new(address: impl Into<String>, processes: impl IntoIterator<Item = ProcessId>) -> Self {
        NodeConfig {
            address: address.into(),
            listen: None,
            processes: processes.into_iter().collect(),
            lines: (None, None),
        }
    }

    /// Binds `listen` instead of its address.
    pub fn listen(mut self, listen: impl Into<String>) -> Self {
        self.listen = Some(listen.into());
        self
    }
}

/// A cluster: its nodes, in order (node I is `nodes[I]`), and where its keys are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The nodes.
    pub nodes: Vec<NodeConfig>,
    /// The folder of the cluster's keys (`keys = "DIR"`, relative to the cluster file; see
    /// [`write_keys`](super::write_keys)).
    pub keys: Option<PathBuf>,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    keys: Option<PathBuf>,
    #[serde(default)]
    node: Vec<NodeTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeTable {
    address: toml::Spanned<String>,
    listen: Option<String>,
    processes: toml::Spanned<Vec<ProcessId>>,
}

/// The line (from 1) of byte `at` of `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl ClusterConfig {
    /// A cluster of `nodes`.
    pub fn new(nodes: Vec<NodeConfig>) -> Self {
        ClusterConfig { nodes, keys: None }
    }

    /// A cluster whose nodes all run on this machine, as tests and benchmarks start one: node
    /// I runs the processes of `placement[I]` and listens on 127.0.0.1, at a port the system
    /// picks. Returns the configuration and each node's listener, already bound: give node I
    /// its own with [`NodeBuilder::listener`](super::NodeBuilder::listener), so that no other
    /// program can take the port before the node starts.
    ///
    /// ```
    /// use chandy_lamport::cluster::ClusterConfig;
    ///
    /// let (config, listeners) = ClusterConfig::on_localhost([vec![0, 2], vec![1, 3]])?;
    /// assert_eq!(config.nodes.len(), 2);
    /// assert_eq!(config.nodes[1].processes, [1, 3]);
    /// assert_eq!(config.nodes[1].address, listeners[1].local_addr()?.to_string());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn on_localhost<I: IntoIterator<Item = ProcessId>>(
        placement: impl IntoIterator<Item = I>,
    ) -> std::io::Result<(ClusterConfig, Vec<TcpListener>)> {
        let mut nodes = Vec::new();
        let mut listeners = Vec::new();
        for processes in placement {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            nodes.push(NodeConfig::new(
                listener.local_addr()?.to_string(),
                processes,
            ));
            listeners.push(listener);
        }
        Ok((ClusterConfig::new(nodes), listeners))
    }

    /// The cluster whose keys are in folder `dir`.
    pub fn with_keys(mut self, dir: impl Into<PathBuf>) -> Self {
        self.keys = Some(dir.into());
        self
    }

    /// Reads a cluster file's text (see the module documentation). Checks the form; what
    /// needs the topology is checked by [`check`](ClusterConfig::check).
    pub fn parse(text: &str) -> Result<Self, ClusterError> {
        let file: File = toml::from_str(text).map_err(|e| ClusterError::Syntax {
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().to_string(),
        })?;
        let nodes = file
            .node
            .into_iter()
            .map(|t| NodeConfig {
                lines: (
                    Some(line_of(text, t.address.span().start)),
                    Some(line_of(text, t.processes.span().start)),
                ),
                address: t.address.into_inner(),
                listen: t.listen,
                processes: t.processes.into_inner(),
            })
            .collect();
        Ok(ClusterConfig {
            nodes,
            keys: file.keys,
        })
    }

    /// Reads the cluster file at `path`. Its `keys` folder, if relative, is taken relative to
    /// the file's folder.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ClusterError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ClusterError::Read {
            message: e.to_string(),
        })?;
        let mut config = Self::parse(&text)?;
        if let (Some(keys), Some(dir)) = (&mut config.keys, path.parent()) {
            if keys.is_relative() {
                *keys = dir.join(&*keys);
            }
        }
        Ok(config)
    }

    /// The file's text (what `parse` reads back).
    pub fn to_toml(&self) -> String {
        // Strings quoted by the TOML crate itself: Rust's `{:?}` writes escapes (`\u{7f}`) that
        // TOML does not read.
        let quoted = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut out = String::new();
        if let Some(keys) = &self.keys {
            out.push_str(&format!(
                "keys = {}\n\n",
                quoted(&keys.display().to_string())
            ));
        }
        for node in &self.nodes {
            out.push_str("[[node]]\n");
            out.push_str(&format!("address = {}\n", quoted(&node.address)));
            if let Some(listen) = &node.listen {
                out.push_str(&format!("listen = {}\n", quoted(listen)));
            }
            out.push_str(&format!("processes = {:?}\n\n", node.processes));
        }
        out
    }

    /// Checks the cluster against a topology of `processes` processes: at least one node,
    /// every process on exactly one node, no two nodes at one address, every address of the
    /// form `host:port`. Returns, by process, the node that runs it.
    pub fn check(&self, processes: usize) -> Result<Vec<usize>, ClusterError> {
        if self.nodes.is_empty() {
            return Err(ClusterError::NoNodes);
        }
        // By listed process, its node: sized by what the file lists, not by `processes`, which
        // may be absurd (`usize::MAX`; then some process is unplaced, said below).
        let listed = self.nodes.iter().map(|n| n.processes.len()).sum();
        let mut node_of: HashMap<ProcessId, usize> = HashMap::with_capacity(listed);
        for (node, config) in self.nodes.iter().enumerate() {
            for &process in &config.processes {
                let line = config.lines.1;
                if process >= processes {
                    return Err(ClusterError::UnknownProcess {
                        node,
                        process,
                        processes,
                        line,
                    });
                }
                if let Some(&first) = node_of.get(&process) {
                    return Err(ClusterError::PlacedTwice {
                        process,
                        first,
                        second: node,
                        line,
                    });
                }
                node_of.insert(process, node);
            }
        }
        for (node, config) in self.nodes.iter().enumerate() {
            let line = config.lines.0;
            if let Some(first) = self.nodes[..node]
                .iter()
                .position(|n| n.address == config.address)
            {
                return Err(ClusterError::DuplicateAddress {
                    address: config.address.clone(),
                    first,
                    second: node,
                    line,
                });
            }
            let well_formed = config
                .address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !well_formed {
                return Err(ClusterError::BadAddress {
                    node,
                    address: config.address.clone(),
                    message: "not of the form host:port".to_string(),
                    line,
                });
            }
        }
        // Every process is listed once (no process twice, none unknown), so this looks at no
        // more processes than the file lists, plus one.
        (0..processes)
            .map(|process| {
                node_of
                    .get(&process)
                    .copied()
                    .ok_or(ClusterError::Unplaced { process })
            })
            .collect()
    }

    /// Node `node`'s address, resolved (the first address its host resolves to).
    pub(crate) fn resolve(&self, node: usize) -> Result<SocketAddr, ClusterError> {
        let config = &self.nodes[node];
        let bad = |message: String| ClusterError::BadAddress {
            node,
            address: config.address.clone(),
            message,
            line: config.lines.0,
        };
        config
            .address
            .to_socket_addrs()
            .map_err(|e| bad(e.to_string()))?
            .next()
            .ok_or_else(|| bad("resolves to no address".to_string()))
    }

    /// What node `node` binds: its `listen`, else its address.
    pub(crate) fn listen_address(&self, node: usize) -> &str {
        let config = &self.nodes[node];
        config.listen.as_deref().unwrap_or(&config.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[node]]
address = "127.0.0.1:7101"
processes = [0, 3]

[[node]]
address = "127.0.0.1:7102"
listen = "0.0.0.0:7102"
processes = [1, 2]
"#;

    #[test]
    fn the_documented_form_reads_and_places_every_process() {
        let config = ClusterConfig::parse(GOOD).unwrap();
        assert_eq!(config.nodes.len(), 2);
        assert_eq!(config.nodes[1].listen.as_deref(), Some("0.0.0.0:7102"));
        assert_eq!(config.check(4).unwrap(), [0, 1, 1, 0]);
        assert_eq!(config.listen_address(0), "127.0.0.1:7101");
        // What `to_toml` writes reads back the same.
        let again = ClusterConfig::parse(&config.to_toml()).unwrap();
        assert_eq!(again.check(4).unwrap(), [0, 1, 1, 0]);
        assert_eq!(again.nodes[1].listen, config.nodes[1].listen);
    }

    /// What `to_toml` writes reads back as the same configuration, whatever the strings hold
    /// (before, Rust's own escapes, such as `\u{7f}`, made a file TOML refuses).
    #[test]
    fn what_to_toml_writes_reads_back() {
        for address in [
            "h\u{7f}:1",
            "h\u{200b}:1",
            "h\u{1b}:1",
            "a \"quoted\" \\ host:2",
        ] {
            let mut node = NodeConfig::new(address, [0, 1]);
            node.listen = Some(format!("{address}-listen"));
            let config = ClusterConfig {
                keys: Some(PathBuf::from(format!("/keys/{address}"))),
                ..ClusterConfig::new(vec![node])
            };
            let text = config.to_toml();
            let back = ClusterConfig::parse(&text)
                .unwrap_or_else(|e| panic!("{address:?}: wrote {text:?}, read back {e}"));
            assert_eq!(back.nodes[0].address, address);
            assert_eq!(back.nodes[0].listen, config.nodes[0].listen);
            assert_eq!(back.nodes[0].processes, [0, 1]);
            assert_eq!(back.keys, config.keys);
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let cases: &[(&str, usize, ClusterError)] = &[
            (
                "[[node]]\naddress = \"a:1\"\nprocesses = [0, 1]\n[[node]]\naddress = \"b:2\"\nprocesses = [1]\n",
                2,
                ClusterError::PlacedTwice {
                    process: 1,
                    first: 0,
                    second: 1,
                    line: Some(6),
                },
            ),
            (
                "[[node]]\naddress = \"a:1\"\nprocesses = [0]\n",
                2,
                ClusterError::Unplaced { process: 1 },
            ),
            (
                "[[node]]\naddress = \"a:1\"\nprocesses = [0, 5]\n",
                2,
                ClusterError::UnknownProcess {
                    node: 0,
                    process: 5,
                    processes: 2,
                    line: Some(3),
                },
            ),
            (
                "[[node]]\naddress = \"a:1\"\nprocesses = [0]\n\n[[node]]\naddress = \"a:1\"\nprocesses = [1]\n",
                2,
                ClusterError::DuplicateAddress {
                    address: "a:1".into(),
                    first: 0,
                    second: 1,
                    line: Some(6),
                },
            ),
            (
                "[[node]]\naddress = \"nowhere\"\nprocesses = [0, 1]\n",
                2,
                ClusterError::BadAddress {
                    node: 0,
                    address: "nowhere".into(),
                    message: "not of the form host:port".into(),
                    line: Some(2),
                },
            ),
            ("", 1, ClusterError::NoNodes),
        ];
        for (text, processes, want) in cases {
            let got = ClusterConfig::parse(text).and_then(|c| c.check(*processes));
            assert_eq!(got.unwrap_err(), *want, "{text}");
        }
    }

    #[test]
    fn syntax_errors_and_unknown_keys_say_where() {
        let e = ClusterConfig::parse("[[node]]\naddress = a:1\nprocesses = [0]\n").unwrap_err();
        assert!(
            matches!(e, ClusterError::Syntax { line: Some(2), .. }),
            "{e:?}"
        );
        let e = ClusterConfig::parse("[[node]]\nadress = \"a:1\"\nprocesses = [0]\n").unwrap_err();
        match e {
            ClusterError::Syntax { line, message } => {
                assert!(message.contains("adress"), "{message}");
                assert!(line.is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    /// An absurd process count is refused by naming a process no node runs, without a vector
    /// of that many entries (before: "capacity overflow").
    #[test]
    fn an_absurd_process_count_is_an_unplaced_process() {
        let config = ClusterConfig::parse(GOOD).unwrap();
        assert!(matches!(
            config.check(usize::MAX),
            Err(ClusterError::Unplaced { process: 4 })
        ));
        assert!(matches!(
            config.check(3),
            Err(ClusterError::UnknownProcess { process: 3, .. })
        ));
    }
}

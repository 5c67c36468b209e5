//! Who feeds whom in a round of a delivery.

use std::fmt;
use std::str::FromStr;

/// The shape of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// Each host feeds the next (the default): every host receives at its link's full
    /// rate, whatever the number of hosts, and sends what it receives once.
    #[default]
    Chain,
    /// Each host feeds up to this many: fewer hops (a failure strands fewer hosts), but a
    /// host's sending link is shared by its children.
    Tree(usize),
    /// This machine feeds every host (what sealer did before relays).
    Direct,
}

impl FromStr for Topology {
    type Err = String;
    fn from_str(s: &str) -> Result<Topology, String> {
        match s {
            "chain" => Ok(Topology::Chain),
            "tree" => Ok(Topology::Tree(2)),
            "direct" => Ok(Topology::Direct),
            _ => match s.strip_prefix("tree:").map(str::parse::<usize>) {
                Some(Ok(n)) if (1..=64).contains(&n) => Ok(Topology::Tree(n)),
                _ => Err(format!(
                    "{s:?} is not a relay: chain, tree, tree:N (N from 1 to 64), or direct"
                )),
            },
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Chain => f.write_str("chain"),
            Topology::Tree(n) => write!(f, "tree:{n}"),
            Topology::Direct => f.write_str("direct"),
        }
    }
}

/// Who feeds a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feeder {
    /// This machine, over SSH.
    Control,
    /// The host at this index, from its relay server.
    Host(usize),
}

/// What the planner knows of a host.
#[derive(Debug, Clone, Copy)]
pub struct HostState {
    pub alive: bool,
    /// It holds every blob.
    pub complete: bool,
    /// It can fetch from another host (with `sealer`, or `curl` while it lacks
    /// `sealer`); else only this machine can feed it.
    pub can_fetch: bool,
}

/// Each host's feeder this round (`None`: not fed this round).
///
/// Pipelined, every host that lacks something is fed at once: the first by a host that
/// has everything, if any, else by this machine; the rest along the chain or tree.
/// Not pipelined (a feeder must hold a blob whole), hosts that have everything feed one
/// host each (or `n` on a tree) and the number of sources doubles each round; with none
/// yet, this machine feeds the first.
pub fn assign(hosts: &[HostState], topology: Topology, pipelined: bool) -> Vec<Option<Feeder>> {
    let pending: Vec<usize> = (0..hosts.len())
        .filter(|&i| hosts[i].alive && !hosts[i].complete)
        .collect();
    let sources: Vec<usize> = (0..hosts.len())
        .filter(|&i| hosts[i].alive && hosts[i].complete)
        .collect();
    let mut feeders = vec![None; hosts.len()];
    let root = sources
        .first()
        .map_or(Feeder::Control, |&s| Feeder::Host(s));
    let fanout = match topology {
        Topology::Tree(n) => n,
        _ => 1,
    };
    if topology == Topology::Direct {
        for &p in &pending {
            feeders[p] = Some(Feeder::Control);
        }
        return feeders;
    }
    if pipelined {
        for (k, &p) in pending.iter().enumerate() {
            feeders[p] = Some(match (k, topology) {
                (0, _) => root,
                (_, Topology::Chain) => Feeder::Host(pending[k - 1]),
                _ => Feeder::Host(pending[(k - 1) / fanout]),
            });
        }
    } else if sources.is_empty() {
        if let Some(&first) = pending.first() {
            feeders[first] = Some(Feeder::Control);
        }
    } else {
        let slots = sources.iter().flat_map(|&s| std::iter::repeat_n(s, fanout));
        for (&p, s) in pending.iter().zip(slots) {
            feeders[p] = Some(Feeder::Host(s));
        }
    }
    // Only this machine can feed a host that cannot fetch.
    for &p in &pending {
        if !hosts[p].can_fetch && feeders[p].is_some() {
            feeders[p] = Some(Feeder::Control);
        }
    }
    feeders
}

/// `feeder`, or, if it cannot serve, the nearest feeder above it that can (this
/// machine at the top).
pub fn reroute(
    feeder: Option<Feeder>,
    feeders: &[Option<Feeder>],
    serves: &dyn Fn(usize) -> bool,
) -> Option<Feeder> {
    let mut f = feeder?;
    for _ in 0..=feeders.len() {
        match f {
            Feeder::Host(i) if !serves(i) => f = feeders[i].unwrap_or(Feeder::Control),
            _ => return Some(f),
        }
    }
    Some(Feeder::Control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(states: &[(bool, bool)]) -> Vec<HostState> {
        states
            .iter()
            .map(|&(alive, complete)| HostState {
                alive,
                complete,
                can_fetch: true,
            })
            .collect()
    }

    #[test]
    fn a_chain_leaves_this_machine_once_and_passes_host_to_host() {
        let f = assign(&hosts(&[(true, false); 4]), Topology::Chain, true);
        use Feeder::*;
        assert_eq!(
            f,
            [Some(Control), Some(Host(0)), Some(Host(1)), Some(Host(2))]
        );
        // A host that has everything leads; a dead one is skipped.
        let f = assign(
            &hosts(&[(true, false), (false, false), (true, true), (true, false)]),
            Topology::Chain,
            true,
        );
        assert_eq!(f, [Some(Host(2)), None, None, Some(Host(0))]);
    }

    #[test]
    fn a_tree_feeds_n_from_each_host_and_once_from_this_machine() {
        use Feeder::*;
        let f = assign(&hosts(&[(true, false); 6]), Topology::Tree(2), true);
        assert_eq!(
            f,
            [
                Some(Control),
                Some(Host(0)),
                Some(Host(0)),
                Some(Host(1)),
                Some(Host(1)),
                Some(Host(2))
            ]
        );
    }

    #[test]
    fn whole_blobs_only_double_the_sources_each_round() {
        use Feeder::*;
        let none = hosts(&[(true, false); 5]);
        assert_eq!(
            assign(&none, Topology::Chain, false),
            [Some(Control), None, None, None, None]
        );
        let two = hosts(&[
            (true, true),
            (true, true),
            (true, false),
            (true, false),
            (true, false),
        ]);
        assert_eq!(
            assign(&two, Topology::Chain, false),
            [None, None, Some(Host(0)), Some(Host(1)), None]
        );
    }

    #[test]
    fn hosts_without_curl_are_fed_from_here_and_dead_feeders_are_skipped() {
        use Feeder::*;
        let mut h = hosts(&[(true, false); 3]);
        h[1].can_fetch = false;
        let f = assign(&h, Topology::Chain, true);
        assert_eq!(f, [Some(Control), Some(Control), Some(Host(1))]);
        let f = [Some(Control), Some(Host(0)), Some(Host(1))];
        assert_eq!(reroute(f[2], &f, &|i| i != 1), Some(Host(0)));
        assert_eq!(reroute(f[2], &f, &|_| false), Some(Control));
        assert_eq!("tree:3".parse(), Ok(Topology::Tree(3)));
        assert!("ring".parse::<Topology>().is_err());
    }
}

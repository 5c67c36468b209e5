//! Content digests (`sha256:<hex>`, `sha512:<hex>`).
//!
//! A [`Digest`] is the only thing that names content on disk, so parsing is strict:
//! the algorithm must be one we implement and the encoded part must be lowercase hex
//! of exactly the algorithm's length. Anything else (`../x`, `/abs`, `sha256:ABC`)
//! is rejected before it can reach the storage layer.

use std::fmt;
use std::str::FromStr;

use ring::digest as ring_digest;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        Hasher {
            algorithm: self,
            context: Context::Ring(ring_digest::Context::new(match self {
                Algorithm::Sha256 => &ring_digest::SHA256,
                Algorithm::Sha512 => &ring_digest::SHA512,
            })),
        }
    }

    /// A hasher whose state can be saved and taken up again elsewhere
    /// ([`Hasher::export`], [`Algorithm::resume`]): for upload sessions that any replica
    /// may continue.
    pub fn resumable_hasher(self) -> Hasher {
        Hasher {
            algorithm: self,
            context: match self {
                Algorithm::Sha256 => Context::Sha256(sha2::Sha256::default()),
                Algorithm::Sha512 => Context::Sha512(sha2::Sha512::default()),
            },
        }
    }

    /// Takes up a hasher from the state [`Hasher::export`] saved.
    pub fn resume(self, state: &[u8]) -> Option<Hasher> {
        use sha2::digest::common::hazmat::SerializableState;
        let context = match self {
            Algorithm::Sha256 => {
                Context::Sha256(sha2::Sha256::deserialize(state.try_into().ok()?).ok()?)
            }
            Algorithm::Sha512 => {
                Context::Sha512(sha2::Sha512::deserialize(state.try_into().ok()?).ok()?)
            }
        };
        Some(Hasher {
            algorithm: self,
            context,
        })
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other if is_algorithm_grammar(other) => {
                Err(DigestError::Unsupported(other.to_string()))
            }
            _ => Err(DigestError::Malformed),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("malformed digest: expected <algorithm>:<hex>")]
    Malformed,
    #[error("unsupported digest algorithm {0:?}: sha256 and sha512 are supported")]
    Unsupported(String),
    #[error("the encoded part of a {0} digest must be {1} lowercase hex characters")]
    BadEncoding(Algorithm, usize),
}

/// A validated content digest. Always canonical: `algorithm:lowercase-hex`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: Box<str>,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part; safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(data);
        h.finish()
    }

    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, encoded) = s.split_once(':').ok_or(DigestError::Malformed)?;
        let algorithm: Algorithm = alg.parse()?;
        let want = algorithm.hex_len();
        if encoded.len() != want
            || !encoded
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(DigestError::BadEncoding(algorithm, want));
        }
        Ok(Digest {
            algorithm,
            hex: encoded.into(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[a-z0-9]+([+._-][a-z0-9]+)*`, the spec's algorithm grammar.
fn is_algorithm_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Incremental hashing for one of the supported algorithms.
///
/// Uses ring's assembly implementations (SHA-NI where the CPU has it, AVX2/SSSE3
/// otherwise): hashing is what bounds a blob push, and on CPUs without SHA extensions
/// these run about twice as fast as portable Rust. A resumable hasher uses the `sha2`
/// crate instead, whose state can be saved ([`Hasher::export`]).
#[derive(Clone)]
pub struct Hasher {
    algorithm: Algorithm,
    context: Context,
}

#[derive(Clone)]
enum Context {
    Ring(ring_digest::Context),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        match &mut self.context {
            Context::Ring(c) => c.update(data),
            Context::Sha256(c) => c.update(data),
            Context::Sha512(c) => c.update(data),
        }
    }

    /// The hasher's state, to take it up again with [`Algorithm::resume`]; `None` for a
    /// hasher that is not resumable.
    pub fn export(&self) -> Option<Vec<u8>> {
        use sha2::digest::common::hazmat::SerializableState;
        match &self.context {
            Context::Ring(_) => None,
            Context::Sha256(c) => Some(c.serialize().to_vec()),
            Context::Sha512(c) => Some(c.serialize().to_vec()),
        }
    }

    /// Hashes everything `r` yields; returns the number of bytes.
    pub fn update_from(&mut self, mut r: impl std::io::Read) -> std::io::Result<u64> {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            self.update(&buf[..n]);
            total += n as u64;
        }
    }

    pub fn finish(self) -> Digest {
        use sha2::Digest as _;
        let hex = match self.context {
            Context::Ring(c) => hex::encode(c.finish().as_ref()),
            Context::Sha256(c) => hex::encode(c.finalize()),
            Context::Sha512(c) => hex::encode(c.finalize()),
        };
        Digest {
            algorithm: self.algorithm,
            hex: hex.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_canonical_digests() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(Digest::sha256_of(b""), d);
        let s512 = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(s512.to_string().parse::<Digest>().unwrap(), s512);
        assert!(s512.to_string().starts_with("sha512:ddaf35a193617aba"));
    }

    #[test]
    fn a_resumed_hasher_continues_where_the_saved_one_stopped() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
            let mut first = algorithm.resumable_hasher();
            first.update(&data[..3333]);
            let saved = first.export().unwrap();
            let mut resumed = algorithm.resume(&saved).unwrap();
            resumed.update(&data[3333..]);
            assert_eq!(resumed.finish(), Digest::of(algorithm, &data));
            assert!(
                algorithm.resume(&saved[1..]).is_none(),
                "a cut state is refused"
            );
        }
        assert!(Algorithm::Sha256.hasher().export().is_none());
    }

    #[test]
    fn rejects_anything_that_could_become_a_path() {
        for bad in [
            "../x",
            "/abs",
            "sha256:../../etc/passwd",
            "sha256:/etc/passwd",
            "sha256:",
            "sha256",
            ":abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn names_unsupported_algorithms() {
        assert_eq!(
            "blake3:abcd".parse::<Digest>(),
            Err(DigestError::Unsupported("blake3".into()))
        );
        assert_eq!(
            "sha-256:ab".parse::<Digest>().unwrap_err(),
            DigestError::Unsupported("sha-256".into())
        );
        assert_eq!(
            "a..b:ab".parse::<Digest>().unwrap_err(),
            DigestError::Malformed
        );
    }

    #[test]
    fn incremental_hashing_matches_one_shot() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = alg.hasher();
            h.update(b"hello ");
            let mut forked = h.clone();
            h.update(b"world");
            forked.update(b"there");
            assert_eq!(h.finish(), Digest::of(alg, b"hello world"));
            assert_eq!(forked.finish(), Digest::of(alg, b"hello there"));
        }
    }
}

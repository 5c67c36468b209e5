//! Docker Hub's names, in one place. It goes by several host names (`docker.io` in
//! image references, `registry-1.docker.io` for its API, `index.docker.io` and a legacy
//! URL in docker's `config.json`); sealer stores and routes its images as `docker.io`
//! (docs/design.md, contract 2).

/// The host name images are stored under.
pub const HOST: &str = "docker.io";
/// The host its registry API answers on.
pub const API_HOST: &str = "registry-1.docker.io";
/// Its registry API.
pub const ENDPOINT: &str = "https://registry-1.docker.io";
/// The key docker's `config.json` keeps its login under (and gives credential helpers).
pub const AUTH_KEY: &str = "https://index.docker.io/v1/";
/// Other names of the same registry, as clients send them.
pub const ALIASES: [&str; 2] = [API_HOST, "index.docker.io"];

/// `host` as sealer names it: Docker Hub's aliases are [`HOST`]; any other host is
/// itself.
pub fn canonical(host: &str) -> &str {
    if ALIASES.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        HOST
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_docker_io_and_other_hosts_themselves() {
        assert_eq!(canonical("registry-1.docker.io"), HOST);
        assert_eq!(canonical("Index.Docker.IO"), HOST);
        assert_eq!(canonical("docker.io"), HOST);
        assert_eq!(canonical("quay.io"), "quay.io");
    }
}

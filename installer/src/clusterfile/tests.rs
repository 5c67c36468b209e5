//! Unit tests of the Clusterfile: parsing, defaults and validation.
use super::*;
use std::path::Path;

const FULL: &str = r#"# a cluster of three
apiVersion: sealer.io/v2
kind: Cluster
metadata:
  name: shop-prod
spec:
  image: example.com/shop:1.0
  env: [PodCIDR=100.64.0.0/10, Mode=prod]
  cmd: [echo hello]
  appNames: [shop]
  ssh: {user: root, passwd: secret, port: "2222"}
  hosts:
    - ips: [10.0.0.2, 10.0.0.3]
      roles: [master]
      ssh: {pk: /root/.ssh/id_ed25519}
      env: [Mode=edge]
      labels: {ssd: "true"}
      taints: ["dedicated=db:NoSchedule"]
    - ips: [10.0.0.5]
      roles: [node]
  containerRuntime: {type: docker}
  registry:
    localRegistry:
      domain: hub.local
      port: 5443
      username: admin
      password: pw
      ha: false
      cert: {subjectAltName: {dnsNames: [reg.local], ips: [10.0.0.9]}}
---
apiVersion: sealer.io/v1
kind: Plugin
metadata: {name: b-motd}
spec: {type: SHELL, action: post-install, data: "echo done"}
---
apiVersion: sealer.io/v1
kind: Plugin
metadata: {name: a-prep}
spec: {action: pre-init-host, scope: master|node, data: "modprobe br_netfilter"}
---
apiVersion: sealer.io/v1
kind: Config
metadata: {name: app-values}
spec: {path: etc/values.yaml, data: "replicas: 3\n", strategy: merge}
"#;

#[test]
fn reads_every_field_with_defaults_and_overrides() {
    let c = parse(FULL, "Clusterfile").unwrap();
    assert_eq!(c.name, "shop-prod");
    assert_eq!(c.image, "example.com/shop:1.0");
    assert_eq!(c.app_names, ["shop"]);
    assert_eq!(c.runtime, RuntimeType::Docker);
    assert_eq!(c.hosts.len(), 3);
    let m0 = c.master0();
    assert_eq!(m0.ip.to_string(), "10.0.0.2");
    // The host's key wins over the cluster's password; the cluster's user and port stay.
    assert_eq!(
        m0.login,
        Login {
            user: "root".into(),
            port: 2222,
            auth: Auth::Key {
                path: "/root/.ssh/id_ed25519".into(),
                passphrase: None
            }
        }
    );
    assert_eq!(c.hosts[2].login.auth, Auth::Password("secret".into()));
    // Host env over cluster env.
    let env: Vec<String> = m0.env.iter().cloned().map(String::from).collect();
    assert_eq!(env, ["PodCIDR=100.64.0.0/10", "Mode=edge"]);
    assert_eq!(m0.labels["ssd"], "true");
    match &c.registry {
        Registry::Local {
            domain,
            port,
            hosts,
            dns_names,
            ..
        } => {
            assert_eq!(domain, "hub.local");
            assert_eq!(*port, 5443);
            // Not ha: master0 only.
            assert_eq!(hosts.len(), 1);
            assert_eq!(dns_names, &["reg.local"]);
        }
        other => panic!("{other:?}"),
    }
    // Plugins sorted by phase, then name.
    let order: Vec<(&str, Phase)> = c
        .plugins
        .iter()
        .map(|p| (p.name.as_str(), p.phase))
        .collect();
    assert_eq!(
        order,
        [
            ("a-prep", Phase::PreInitHost),
            ("b-motd", Phase::PostInstall)
        ]
    );
    assert_eq!(c.plugins[0].scope, ["master", "node"]);
    assert_eq!(c.configs[0].strategy, ConfigStrategy::Merge);
}

#[test]
fn defaults_when_nearly_nothing_is_said() {
    let c = parse(
        "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  image: app:1\n  hosts:\n  - {ips: [192.168.1.10], roles: [master]}\n",
        "cf",
    )
    .unwrap();
    assert_eq!(c.name, "default");
    assert_eq!(c.runtime, RuntimeType::Containerd);
    assert_eq!(
        c.hosts[0].login,
        Login {
            user: "root".into(),
            port: 22,
            auth: Auth::Default
        }
    );
    match c.registry {
        Registry::Local {
            domain,
            port,
            insecure,
            hosts,
            ..
        } => {
            assert_eq!((domain.as_str(), port, insecure), ("sea.hub", 5000, false));
            assert_eq!(hosts.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

fn error_of(text: &str) -> ClusterfileError {
    parse(text, "Clusterfile").expect_err("should be refused")
}

#[test]
fn errors_name_the_document_the_field_and_the_line() {
    // A bad address in the second host group, on line 19 of the file.
    let text = FULL.replace("[10.0.0.5]", "[10.0.0.999]");
    let e = error_of(&text);
    assert_eq!(e.document, 1);
    assert_eq!(e.kind.as_deref(), Some("Cluster"));
    assert_eq!(e.field.as_deref(), Some("spec.hosts[1].ips[0]"), "{e}");
    assert_eq!(e.line, Some(19), "{e}");
    assert!(
        e.to_string()
            .starts_with("Clusterfile:19: document 1 (Cluster): spec.hosts[1].ips[0]: "),
        "{e}"
    );

    // An unknown phase in the second Plugin (document 3).
    let e = error_of(&FULL.replace("pre-init-host", "pre-int-host"));
    assert_eq!((e.document, e.kind.as_deref()), (3, Some("Plugin")));
    assert_eq!(e.field.as_deref(), Some("spec.action"));
    assert!(e.message.contains("pre-init-host"), "{e}");

    // A misspelt field.
    let e = error_of(&FULL.replace("appNames", "appName"));
    assert_eq!(e.field.as_deref(), Some("spec.appName"), "{e}");
    assert!(e.message.contains("unknown field"), "{e}");

    // Rules across fields.
    let e = error_of(&FULL.replace("roles: [master]", "roles: [node]"));
    assert_eq!(e.field.as_deref(), Some("spec.hosts"));
    assert!(e.message.contains("master"), "{e}");
    let e = error_of(&FULL.replace("10.0.0.5", "10.0.0.3"));
    assert_eq!(e.field.as_deref(), Some("spec.hosts[1].ips[0]"));
    assert!(e.message.contains("listed twice"), "{e}");
    let e = error_of(&FULL.replace("\"dedicated=db:NoSchedule\"", "\"dedicated\""));
    assert_eq!(e.field.as_deref(), Some("spec.hosts[0].taints[0]"));
    let e = error_of(&FULL.replace("path: etc/values.yaml", "path: ../../etc/passwd"));
    assert_eq!((e.document, e.kind.as_deref()), (4, Some("Config")));
    let e = error_of(&FULL.replace("sealer.io/v2", "sealer.io/v9"));
    assert_eq!(e.field.as_deref(), Some("apiVersion"));
    let e = error_of(&FULL.replace("port: \"2222\"", "port: \"22x\""));
    assert_eq!(e.field.as_deref(), Some("spec.ssh.port"), "{e}");
    let e =
        error_of("apiVersion: sealer.io/v1\nkind: Plugin\nspec: {action: post-install, data: x}\n");
    assert!(e.message.contains("no document of kind Cluster"), "{e}");
    let e = error_of(&format!("{FULL}---\n{}", FULL.split("---").next().unwrap()));
    assert!(e.message.contains("second Cluster"), "{e}");
}

#[test]
fn values_that_reach_a_shell_hosts_or_rm_are_checked() {
    // An env key is written as `export KEY=...` on every host.
    let e = error_of(&FULL.replace("Mode=prod", "\"A;touch /tmp/x;B=1\""));
    assert_eq!(e.field.as_deref(), Some("spec.env[1]"), "{e}");
    assert!(e.message.contains("not a variable name"), "{e}");
    let e = error_of(&FULL.replace("env: [Mode=edge]", "env: [\"$(id)=1\"]"));
    assert!(e.message.contains("not a variable name"), "{e}");
    // The registry's domain and host aliases go into /etc/hosts line by line.
    let e = error_of(&FULL.replace("domain: hub.local", "domain: \"hub.local\\n10.9.9.9 evil\""));
    assert_eq!(
        e.field.as_deref(),
        Some("spec.registry.localRegistry.domain"),
        "{e}"
    );
    let aliases = "  hostAliases: [{ip: 10.0.0.7, hostnames: [db.local, \"x y\"]}]\n  registry:";
    let e = error_of(&FULL.replacen("  registry:", aliases, 1));
    assert_eq!(
        e.field.as_deref(),
        Some("spec.hostAliases[0].hostnames[1]"),
        "{e}"
    );
    // `delete` removes <dataRoot>/<name>.
    for bad in ["/", "/etc", "/srv", "relative", "/var/lib/sealer/../../etc"] {
        let text = FULL.replacen(
            "  registry:",
            &format!("  dataRoot: \"{bad}\"\n  registry:"),
            1,
        );
        let e = error_of(&text);
        assert_eq!(e.field.as_deref(), Some("spec.dataRoot"), "{bad}: {e}");
    }
    let text = FULL.replacen("  registry:", "  dataRoot: /data/it's\n  registry:", 1);
    let c = parse(&text, "Clusterfile").unwrap();
    assert_eq!(c.data_dir(), Path::new("/data/it's/shop-prod"));
}

#[test]
fn an_external_registry_is_read_and_checked() {
    let external = |fields: &str| {
        let local = "    localRegistry:\n      domain: hub.local\n      port: 5443\n      username: admin\n      password: pw\n      ha: false\n      cert: {subjectAltName: {dnsNames: [reg.local], ips: [10.0.0.9]}}\n";
        assert!(FULL.contains(local));
        FULL.replace(local, &format!("    externalRegistry: {{{fields}}}\n"))
    };
    let c = parse(
        &external("domain: harbor.corp, port: 8443, username: u, password: p, ca: /etc/ca.crt"),
        "Clusterfile",
    )
    .unwrap();
    assert_eq!(
        c.registry,
        Registry::External {
            domain: "harbor.corp".into(),
            port: Some(8443),
            username: Some("u".into()),
            password: Some("p".into()),
            insecure: false,
            ca: Some("/etc/ca.crt".into()),
        }
    );
    let e = error_of(&external("domain: harbor.corp, username: u"));
    assert_eq!(e.field.as_deref(), Some("spec.registry.externalRegistry"));
    assert!(e.message.contains("together"), "{e}");
    let e = error_of(&external("domain: \"https://harbor.corp\""));
    assert_eq!(
        e.field.as_deref(),
        Some("spec.registry.externalRegistry.domain")
    );
    let e = error_of(&external("domain: h, insecure: true, ca: /x"));
    assert!(e.message.contains("ca is for HTTPS"), "{e}");
}

#[test]
fn the_short_form_is_a_cluster_too() {
    let c = ShortForm {
        image: "app:1".into(),
        masters: vec!["10.0.0.2".parse().unwrap()],
        nodes: vec!["10.0.0.3".parse().unwrap(), "10.0.0.4".parse().unwrap()],
        passwd: Some("pw".into()),
        ..Default::default()
    }
    .into_cluster()
    .unwrap();
    assert_eq!(c.hosts.len(), 3);
    assert_eq!(c.master0().ip.to_string(), "10.0.0.2");
    assert_eq!(c.hosts[2].roles, ["node"]);
    assert_eq!(c.hosts[2].login.auth, Auth::Password("pw".into()));

    let e = ShortForm {
        image: "app:1".into(),
        ..Default::default()
    }
    .into_cluster()
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("-m/--masters"), "{e}");
}

#[test]
fn the_documents_render_to_a_clusterfile_that_reads_back_the_same() {
    let c = parse(FULL, "Clusterfile").unwrap();
    let text = c.source.render();
    let again = parse(&text, "state").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again, c);

    // A host added to the documents is a host of the resolved cluster.
    let mut docs = c.source.clone();
    docs.cluster.spec.hosts.push(HostGroup {
        ips: vec!["10.0.0.99".parse().unwrap()],
        roles: vec!["node".into()],
        ..Default::default()
    });
    let grown = docs.resolve("state").unwrap();
    assert_eq!(grown.hosts.len(), c.hosts.len() + 1);
    assert!(grown.host("10.0.0.99".parse().unwrap()).is_some());
}

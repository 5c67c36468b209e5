//! Unit tests of the Kubefile parser: instructions, variables, errors with their lines.
use super::*;

fn parse_with(text: &str, options: &ParseOptions) -> Result<Kubefile, KubefileError> {
    Kubefile::parse(Path::new("ctx/Kubefile"), text, options)
}

fn parse(text: &str) -> Kubefile {
    let options = ParseOptions {
        platform: Some("linux/amd64".into()),
        ..Default::default()
    };
    parse_with(text, &options).unwrap_or_else(|e| panic!("{e}"))
}

fn instructions(text: &str) -> Vec<Instruction> {
    parse(text)
        .steps
        .into_iter()
        .map(|s| s.instruction)
        .collect()
}

/// The error for `text`, as the user sees it.
fn error(text: &str) -> String {
    parse_with(text, &ParseOptions::default())
        .expect_err("the Kubefile is refused")
        .to_string()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn sealers_base_image_kubefile() {
    let k = parse(
        r#"FROM scratch
COPY rootfs .
COPY ${ARCH} .
COPY imageList manifests
LABEL "cluster.alpha.sealer.io/cluster-runtime-version"="v1.22.15"
LABEL "cluster.alpha.sealer.io/cluster-runtime-type"="kubernetes"
COPY tigera-operator.yaml applications/tigera-operator.yaml
CNI calico local://calico.sh
LAUNCH ["calico"]
"#,
    );
    assert_eq!(k.base(), None);
    let lines: Vec<_> = k.steps.iter().map(|s| s.line).collect();
    assert_eq!(lines, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(
        k.steps[2].instruction,
        Instruction::Copy {
            sources: s(&["amd64"]),
            dest: ".".into()
        }
    );
    assert_eq!(
        k.steps[4].instruction,
        Instruction::Label(kv(&[(
            "cluster.alpha.sealer.io/cluster-runtime-version",
            "v1.22.15"
        )]))
    );
    assert_eq!(
        k.steps[7].instruction,
        Instruction::App {
            name: "calico".into(),
            role: AppRole::Cni,
            sources: vec![AppSource::Local("calico.sh".into())]
        }
    );
    assert_eq!(k.steps[8].instruction, Instruction::Launch(s(&["calico"])));
}

#[test]
fn from_with_platform_and_arg_before_it() {
    let k = parse(
        "ARG BASE=docker.io/sealerio/kubernetes:v1-22-15\nFROM --platform=linux/arm64 ${BASE}\n",
    );
    assert_eq!(k.base(), Some("docker.io/sealerio/kubernetes:v1-22-15"));
    assert_eq!(
        k.steps[1].instruction,
        Instruction::From {
            image: "docker.io/sealerio/kubernetes:v1-22-15".into(),
            platform: Some("linux/arm64".into())
        }
    );
}

#[test]
fn arch_follows_the_platform_being_built() {
    let text = "FROM scratch\nCOPY bin/${ARCH}/* $TARGETOS/ \"x-$TARGETPLATFORM\" /opt/\n";
    for (platform, arch) in [("linux/amd64", "amd64"), ("linux/arm64/v8", "arm64")] {
        let k = parse_with(
            text,
            &ParseOptions {
                platform: Some(platform.into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            k.steps[1].instruction,
            Instruction::Copy {
                sources: vec![
                    format!("bin/{arch}/*"),
                    "linux/".into(),
                    format!("x-{platform}")
                ],
                dest: "/opt/".into()
            }
        );
    }
}

#[test]
fn copy_and_add_json_form() {
    assert_eq!(
        instructions("FROM scratch\nCOPY [\"my dir\", \"b\", \"dest/\"]\nADD charts.tgz charts/\n")
            [1..],
        [
            Instruction::Copy {
                sources: s(&["my dir", "b"]),
                dest: "dest/".into()
            },
            Instruction::Add {
                sources: s(&["charts.tgz"]),
                dest: "charts/".into()
            }
        ]
    );
}

#[test]
fn args_take_build_args_then_defaults_and_unused_build_args_are_reported() {
    let options = ParseOptions {
        build_args: [("VERSION", "2.0"), ("TYPO", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        platform: Some("linux/amd64".into()),
    };
    let k = parse_with(
        "FROM scratch\nARG VERSION=1.0\nARG DIR=charts\nARG EMPTY\nCOPY $DIR/app-${VERSION}.tgz ${EMPTY}x /\n",
        &options,
    )
    .unwrap();
    assert_eq!(
        k.steps[4].instruction,
        Instruction::Copy {
            sources: s(&["charts/app-2.0.tgz", "x"]),
            dest: "/".into()
        }
    );
    assert_eq!(
        k.steps[1].instruction,
        Instruction::Arg {
            name: "VERSION".into(),
            default: Some("1.0".into())
        }
    );
    assert_eq!(k.unused_build_args, s(&["TYPO"]));
}

#[test]
fn env_both_forms_and_later_expansion() {
    assert_eq!(
        instructions(
            "FROM scratch\nENV DOMAIN=cluster.local NAME=\"my app\"\nENV PATH_TO /opt/$NAME here\nLABEL d=$DOMAIN\n"
        )[1..],
        [
            Instruction::Env(kv(&[("DOMAIN", "cluster.local"), ("NAME", "my app")])),
            Instruction::Env(kv(&[("PATH_TO", "/opt/my app here")])),
            Instruction::Label(kv(&[("d", "cluster.local")])),
        ]
    );
}

#[test]
fn run_and_cmd_in_shell_and_exec_form_are_not_expanded() {
    assert_eq!(
        instructions(
            "FROM scratch\nARG X=1\nRUN echo $X > /tmp/x && \\\n    ls\nRUN [\"sh\", \"-c\", \"echo $X\"]\nCMD kubectl apply -f $X\nCMD [\"helm\", \"install\"]\n"
        )[2..],
        [
            Instruction::Run(Command::Shell("echo $X > /tmp/x && ls".into())),
            Instruction::Run(Command::Exec(s(&["sh", "-c", "echo $X"]))),
            Instruction::Cmd(Command::Shell("kubectl apply -f $X".into())),
            Instruction::Cmd(Command::Exec(s(&["helm", "install"]))),
        ]
    );
}

#[test]
fn apps_with_commands_env_and_launch() {
    let k = instructions(
        r#"FROM docker.io/sealerio/kubernetes:v1-22-15-sealerio-2
APP mysql https://charts.example.com/mysql.tgz
APP redis local://redis.yaml local://redis-svc.yaml
APP businessApp local://install.sh
CSI openebs local://openebs
APPCMDS businessApp ["bash", "install.sh", "--fast"]
APPENV redis MODE=cluster REPLICAS=3
APPENV calico KEY=v
KUBEVERSION >=v1.20.0
LAUNCH ["calico", "mysql", "redis", "businessApp"]
"#,
    );
    assert_eq!(
        k[1],
        Instruction::App {
            name: "mysql".into(),
            role: AppRole::App,
            sources: vec![AppSource::Remote(
                "https://charts.example.com/mysql.tgz".into()
            )]
        }
    );
    assert_eq!(
        k[2],
        Instruction::App {
            name: "redis".into(),
            role: AppRole::App,
            sources: vec![
                AppSource::Local("redis.yaml".into()),
                AppSource::Local("redis-svc.yaml".into())
            ]
        }
    );
    assert!(matches!(
        &k[4],
        Instruction::App {
            role: AppRole::Csi,
            ..
        }
    ));
    assert_eq!(
        k[5],
        Instruction::AppCmds {
            name: "businessApp".into(),
            cmds: s(&["bash", "install.sh", "--fast"])
        }
    );
    assert_eq!(
        k[6],
        Instruction::AppEnv {
            name: "redis".into(),
            env: kv(&[("MODE", "cluster"), ("REPLICAS", "3")])
        }
    );
    // `calico` comes from the base image: only the build can check it.
    assert!(matches!(&k[7], Instruction::AppEnv { name, .. } if name == "calico"));
    assert_eq!(k[8], Instruction::KubeVersion(">=v1.20.0".into()));
    assert_eq!(
        k[9],
        Instruction::Launch(s(&["calico", "mysql", "redis", "businessApp"]))
    );
}

#[test]
fn launch_shell_form_and_cmds_both_forms() {
    assert_eq!(
        instructions("FROM scratch\nAPP a local://a.sh\nAPP b local://b.yaml\nlaunch a b\n")[3],
        Instruction::Launch(s(&["a", "b"]))
    );
    assert_eq!(
        instructions("FROM scratch\nCMDS [\"kubectl apply -f a.yaml\", \"bash b.sh\"]\n")[1],
        Instruction::Cmds(s(&["kubectl apply -f a.yaml", "bash b.sh"]))
    );
    assert_eq!(
        instructions("FROM scratch\nCMDS kubectl apply -f a.yaml\n")[1],
        Instruction::Cmds(s(&["kubectl apply -f a.yaml"]))
    );
}

#[test]
fn errors_name_the_file_line_and_problem() {
    let cases: &[(&str, &str)] = &[
        ("COPY a b\n", "ctx/Kubefile:1: COPY before FROM"),
        ("\n# c\n", "no FROM"),
        ("FROM scratch\nFROM scratch\n", ":2: a second FROM"),
        ("FROM a b\n", ":1: FROM takes one image"),
        ("FROM --arch=x a\n", "FROM does not take --arch=x"),
        (
            "FROM scratch\nCOPY only\n",
            ":2: COPY needs a source and a destination",
        ),
        (
            "FROM scratch\nCOPY --from=x a b\n",
            "COPY does not take --from=x",
        ),
        ("FROM scratch\nCOPY [\"a\", \n", ":2: bad JSON array"),
        (
            "FROM scratch\nCOPY \"a b\n",
            ":2: unterminated double quote",
        ),
        ("FROM scratch\nFOO bar\n", ":2: unknown instruction FOO"),
        (
            "FROM scratch\nWORKDIR /x\n",
            "WORKDIR is a Dockerfile instruction",
        ),
        ("FROM scratch\nRUN\n", ":2: RUN needs arguments"),
        ("FROM scratch\nARG 1X=2\n", "bad ARG name \"1X\""),
        ("FROM scratch\nARG A B\n", "ARG takes one NAME"),
        ("FROM scratch\nENV 1A value\n", "bad ENV name"),
        (
            "FROM scratch\nLABEL novalue\n",
            "LABEL takes KEY=VALUE pairs",
        ),
        ("FROM scratch\nAPP a\n", "APP a needs a source"),
        (
            "FROM scratch\nAPP a ftp://x\n",
            "bad application source \"ftp://x\"",
        ),
        (
            "FROM scratch\nAPP a/b local://x\n",
            "bad application name \"a/b\"",
        ),
        (
            "FROM scratch\nAPP a local://x\nCNI a local://y\n",
            ":3: application a is declared twice",
        ),
        (
            "FROM scratch\nAPPCMDS ghost [\"x\"]\n",
            "no application ghost is declared above",
        ),
        (
            "FROM scratch\nAPP a local://a\nAPPCMDS a bash a.sh\n",
            "APPCMDS a takes a JSON array",
        ),
        (
            "FROM scratch\nAPP a local://a\nAPPCMDS a []\n",
            "APPCMDS a has no command",
        ),
        (
            "FROM scratch\nAPPENV a\n",
            "needs an application name and a value",
        ),
        (
            "FROM scratch\nKUBEVERSION 1 2\n",
            "KUBEVERSION takes one version",
        ),
        (
            "FROM scratch\nAPP a local://a\nLAUNCH [\"a\"]\nCOPY a b\n",
            ":3: LAUNCH must be the last instruction",
        ),
        (
            "FROM scratch\nCMDS [\"a\"]\nCMDS [\"b\"]\n",
            ":3: CMDS may appear only once",
        ),
        (
            "FROM scratch\nAPP a local://a\nCMD a\nLAUNCH [\"a\"]\n",
            ":4: LAUNCH and CMD cannot be used together",
        ),
        (
            "FROM scratch\nAPP a local://a\nLAUNCH [\"a\", \"b\"]\n",
            ":3: LAUNCH b: no application b is declared above",
        ),
        (
            "FROM scratch\nCMDS [1]\n",
            "CMDS takes a JSON array of commands",
        ),
    ];
    for (text, expected) in cases {
        let e = error(text);
        assert!(
            e.contains(expected),
            "{text:?}: got {e:?}, want {expected:?}"
        );
        assert!(e.starts_with("ctx/Kubefile:"), "{e}");
    }
}

#[test]
fn reading_a_missing_file_is_an_error_naming_it() {
    let e =
        Kubefile::read(Path::new("/nonexistent/Kubefile"), &ParseOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/Kubefile:0: cannot read the Kubefile")
    );
}

#[test]
fn the_example_kubefile_parses() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/Kubefile"));
    let k = Kubefile::read(path, &ParseOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(k.base(), None);
    assert_eq!(
        k.steps.last().unwrap().instruction,
        Instruction::Launch(s(&["setup", "shop", "web"]))
    );
    assert!(
        k.steps
            .iter()
            .any(|s| s.instruction
                == Instruction::Label(kv(&[("app.example.com/channel", "stable")])))
    );
}

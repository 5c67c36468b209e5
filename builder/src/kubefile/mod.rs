//! The Kubefile: sealer's build file, parsed into checked instructions.
//!
//! The instructions and their meaning follow sealer's (docs/kubefile.md). Parsing is done
//! per target platform: `${ARCH}` (also `$TARGETARCH`, `$TARGETOS`, `$TARGETPLATFORM`)
//! expands to the platform being built, as do `ARG`s (given with `--build-arg` or their
//! default) and earlier `ENV`s, in every instruction except the commands a shell runs
//! later (`RUN`, `CMD`, `CMDS`, `APPCMDS`), which the shell expands itself.

mod lexer;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use lexer::{LogicalLine, is_name, words};

/// A Kubefile line that cannot be used: the file, the line and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct KubefileError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// How a command is written: `["prog", "arg"]` (run as is) or a line for `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Exec(argv) => write!(f, "{}", argv.join(" ")),
            Command::Shell(line) => f.write_str(line),
        }
    }
}

/// Where an application's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// `local://path`, relative to the build context.
    Local(PathBuf),
    /// `http://…` or `https://…`, downloaded at build time.
    Remote(String),
}

/// What declared an application: `APP`, or `CNI`/`CSI` (which also label the image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppRole {
    App,
    Cni,
    Csi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From {
        image: String,
        platform: Option<String>,
    },
    /// Files from the build context into the image's root folder (the cluster rootfs).
    Copy {
        sources: Vec<String>,
        dest: String,
    },
    /// As `Copy`, but local tar archives (plain, gzip, zstd) are unpacked.
    Add {
        sources: Vec<String>,
        dest: String,
    },
    Arg {
        name: String,
        default: Option<String>,
    },
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    /// Runs on the build host inside the image's root folder.
    Run(Command),
    App {
        name: String,
        role: AppRole,
        sources: Vec<AppSource>,
    },
    AppCmds {
        name: String,
        cmds: Vec<String>,
    },
    AppEnv {
        name: String,
        env: Vec<(String, String)>,
    },
    /// The applications to launch after the cluster is up, in order.
    Launch(Vec<String>),
    /// Raw commands run by `sealer run`.
    Cmds(Vec<String>),
    /// Deprecated: each `CMD` appends a launch command.
    Cmd(Command),
    KubeVersion(String),
    Maintainer(String),
}

/// One instruction and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub instruction: Instruction,
}

/// A parsed Kubefile, for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubefile {
    pub steps: Vec<Step>,
    /// `--build-arg`s no `ARG` declares (Docker warns about these too).
    pub unused_build_args: Vec<String>,
}

/// What a parse needs besides the text.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// The platform being built, e.g. `linux/amd64`; `${ARCH}` is its architecture.
    pub platform: Option<String>,
}

impl Kubefile {
    /// Reads and parses the Kubefile at `path`.
    pub fn read(path: &Path, options: &ParseOptions) -> Result<Kubefile, KubefileError> {
        let error = |message: String| KubefileError {
            file: path.to_path_buf(),
            line: 0,
            message,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_KUBEFILE_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| error(format!("cannot read the Kubefile: {e}")))?;
        if text.len() as u64 > MAX_KUBEFILE_BYTES {
            return Err(error(format!(
                "larger than {} KiB: not a Kubefile",
                MAX_KUBEFILE_BYTES >> 10
            )));
        }
        Kubefile::parse(path, &text, options)
    }

    /// Parses `text`; `file` names it in errors.
    pub fn parse(
        file: &Path,
        text: &str,
        options: &ParseOptions,
    ) -> Result<Kubefile, KubefileError> {
        let mut parser = Parser::new(options);
        let lines = lexer::logical_lines(text);
        for l in &lines {
            let instruction = parser.instruction(l).map_err(|message| KubefileError {
                file: file.to_path_buf(),
                line: l.line,
                message,
            })?;
            parser.steps.push(Step {
                line: l.line,
                instruction,
            });
        }
        parser.check().map_err(|(line, message)| KubefileError {
            file: file.to_path_buf(),
            line,
            message,
        })?;
        let unused_build_args = options
            .build_args
            .keys()
            .filter(|k| !parser.declared_args.contains(k.as_str()))
            .cloned()
            .collect();
        Ok(Kubefile {
            steps: parser.steps,
            unused_build_args,
        })
    }

    /// The base image (`None` for `scratch`).
    pub fn base(&self) -> Option<&str> {
        self.steps.iter().find_map(|s| match &s.instruction {
            Instruction::From { image, .. } if image != "scratch" => Some(image.as_str()),
            _ => None,
        })
    }
}

/// Most bytes all `ARG` and `ENV` values may hold together.
const MAX_VARS_BYTES: usize = 1 << 20;

/// The largest Kubefile read.
const MAX_KUBEFILE_BYTES: u64 = 1 << 20;

struct Parser {
    steps: Vec<Step>,
    vars: HashMap<String, String>,
    /// The bytes `vars` values hold.
    vars_bytes: usize,
    build_args: BTreeMap<String, String>,
    declared_args: std::collections::HashSet<String>,
}

impl Parser {
    fn new(options: &ParseOptions) -> Parser {
        let mut vars = HashMap::new();
        let platform = options
            .platform
            .clone()
            .unwrap_or_else(|| format!("linux/{}", host_arch()));
        let mut parts = platform.splitn(3, '/');
        let os = parts.next().unwrap_or("linux").to_string();
        let arch = parts.next().unwrap_or(host_arch()).to_string();
        vars.insert("ARCH".into(), arch.clone());
        vars.insert("TARGETARCH".into(), arch);
        vars.insert("TARGETOS".into(), os);
        vars.insert("TARGETPLATFORM".into(), platform);
        Parser {
            steps: Vec::new(),
            vars_bytes: vars.values().map(String::len).sum(),
            vars,
            build_args: options.build_args.clone(),
            declared_args: Default::default(),
        }
    }

    /// Sets an `ARG` or `ENV` variable, within [`MAX_VARS_BYTES`] for all of them.
    fn set_var(&mut self, name: &str, value: String) -> Result<(), String> {
        let old = self.vars.get(name).map_or(0, String::len);
        self.vars_bytes = self.vars_bytes - old + value.len();
        if self.vars_bytes > MAX_VARS_BYTES {
            return Err(format!(
                "ARG and ENV values hold more than {} KiB in all",
                MAX_VARS_BYTES >> 10
            ));
        }
        self.vars.insert(name.to_string(), value);
        Ok(())
    }

    fn has_from(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.instruction, Instruction::From { .. }))
    }

    fn instruction(&mut self, l: &LogicalLine) -> Result<Instruction, String> {
        let rest = l.rest.as_str();
        let keyword = l.keyword.as_str();
        if !self.has_from() && !matches!(keyword, "FROM" | "ARG") {
            return Err(format!(
                "{keyword} before FROM: a Kubefile starts with FROM (only ARG may come before it)"
            ));
        }
        if rest.is_empty() {
            return Err(format!("{keyword} needs arguments"));
        }
        let vars = Some(&self.vars);
        Ok(match keyword {
            "FROM" => self.from(rest)?,
            "COPY" | "ADD" => copy(keyword, rest, vars)?,
            "ARG" => self.arg(rest)?,
            "ENV" => {
                let pairs = key_values("ENV", rest, vars, true)?;
                for (k, v) in &pairs {
                    self.set_var(k, v.clone())?;
                }
                Instruction::Env(pairs)
            }
            "LABEL" => Instruction::Label(key_values("LABEL", rest, vars, false)?),
            "MAINTAINER" => Instruction::Maintainer(rest.to_string()),
            "RUN" => Instruction::Run(command(rest)?),
            "CMD" => Instruction::Cmd(command(rest)?),
            "APP" | "CNI" | "CSI" => self.app(keyword, rest)?,
            "APPCMDS" => {
                let (name, cmds) = split_name(rest)?;
                self.require_app(name, keyword)?;
                Instruction::AppCmds {
                    name: name.to_string(),
                    cmds: app_cmds(name, cmds)?,
                }
            }
            "APPENV" => {
                let (name, env) = split_name(rest)?;
                self.require_app(name, keyword)?;
                Instruction::AppEnv {
                    name: name.to_string(),
                    env: key_values("APPENV", env, vars, false)?,
                }
            }
            "LAUNCH" => {
                let names = json_or_words(rest, None)?;
                for n in &names {
                    self.require_app(n, keyword)?;
                }
                Instruction::Launch(names)
            }
            "CMDS" => Instruction::Cmds(if rest.starts_with('[') {
                json_array(rest).map_err(|e| {
                    format!("CMDS takes a JSON array of commands, e.g. [\"kubectl apply -f x.yaml\"]: {e}")
                })?
            } else {
                vec![rest.to_string()]
            }),
            "KUBEVERSION" => {
                let ws = words(rest, vars)?;
                let [v] = ws.as_slice() else {
                    return Err("KUBEVERSION takes one version constraint, e.g. v1.22.15".into());
                };
                Instruction::KubeVersion(v.clone())
            }
            "ONBUILD" | "EXPOSE" | "VOLUME" | "USER" | "WORKDIR" | "ENTRYPOINT" | "HEALTHCHECK"
            | "SHELL" | "STOPSIGNAL" => {
                return Err(format!(
                    "{keyword} is a Dockerfile instruction that a Kubefile does not support"
                ));
            }
            other => return Err(format!("unknown instruction {other}")),
        })
    }

    /// `FROM [--platform=P] IMAGE`: once.
    fn from(&self, rest: &str) -> Result<Instruction, String> {
        if self.has_from() {
            return Err("a second FROM: multi-stage Kubefiles are not supported".into());
        }
        let mut platform = None;
        let mut image = None;
        for w in words(rest, Some(&self.vars))? {
            if let Some(p) = w.strip_prefix("--platform=") {
                platform = Some(p.to_string());
            } else if w.starts_with("--") {
                return Err(format!("FROM does not take {w}"));
            } else if image.replace(w).is_some() {
                return Err("FROM takes one image".into());
            }
        }
        Ok(Instruction::From {
            image: image.ok_or("FROM needs an image or scratch")?,
            platform,
        })
    }

    /// `ARG NAME[=default]`: its value (a `--build-arg`, else the default) is a variable
    /// from here on.
    fn arg(&mut self, rest: &str) -> Result<Instruction, String> {
        let ws = words(rest, Some(&self.vars))?;
        let [arg] = ws.as_slice() else {
            return Err("ARG takes one NAME or NAME=default".into());
        };
        let (name, default) = match arg.split_once('=') {
            Some((n, d)) => (n.to_string(), Some(d.to_string())),
            None => (arg.clone(), None),
        };
        if !is_name(&name) {
            return Err(format!("bad ARG name {name:?}"));
        }
        let value = self
            .build_args
            .get(&name)
            .cloned()
            .or_else(|| default.clone())
            .unwrap_or_default();
        self.set_var(&name, value)?;
        self.declared_args.insert(name.clone());
        Ok(Instruction::Arg { name, default })
    }

    /// `APP`, `CNI` or `CSI NAME SOURCE...`: an application declared once.
    fn app(&self, keyword: &str, rest: &str) -> Result<Instruction, String> {
        let ws = words(rest, Some(&self.vars))?;
        let [name, sources @ ..] = ws.as_slice() else {
            unreachable!("rest is not empty")
        };
        check_app_name(name)?;
        if sources.is_empty() {
            return Err(format!(
                "{keyword} {name} needs a source: local://PATH or http(s)://URL"
            ));
        }
        let sources = sources
            .iter()
            .map(|s| app_source(s))
            .collect::<Result<Vec<_>, _>>()?;
        if self.app_declared(name) {
            return Err(format!("application {name} is declared twice"));
        }
        let role = match keyword {
            "CNI" => AppRole::Cni,
            "CSI" => AppRole::Csi,
            _ => AppRole::App,
        };
        Ok(Instruction::App {
            name: name.clone(),
            role,
            sources,
        })
    }

    fn app_declared(&self, name: &str) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(&s.instruction, Instruction::App { name: n, .. } if n == name))
    }

    /// APPCMDS and APPENV refer to an application declared above or by the base image,
    /// which only the build knows: names are checked here only when the base is scratch.
    fn require_app(&self, name: &str, keyword: &str) -> Result<(), String> {
        check_app_name(name)?;
        let from_scratch = self.steps.iter().any(
            |s| matches!(&s.instruction, Instruction::From { image, .. } if image == "scratch"),
        );
        if from_scratch && !self.app_declared(name) {
            return Err(format!(
                "{keyword} {name}: no application {name} is declared above (APP, CNI or CSI)"
            ));
        }
        Ok(())
    }

    /// Rules about the whole file.
    fn check(&self) -> Result<(), (usize, String)> {
        if !self.has_from() {
            return Err((
                self.steps.last().map_or(1, |s| s.line),
                "no FROM: a Kubefile starts with FROM scratch or FROM <image>".into(),
            ));
        }
        let last = self.steps.len() - 1;
        let mut launch = None;
        let mut cmds = None;
        let mut cmd = None;
        for (i, s) in self.steps.iter().enumerate() {
            let (slot, what) = match &s.instruction {
                Instruction::Launch(_) => (&mut launch, "LAUNCH"),
                Instruction::Cmds(_) => (&mut cmds, "CMDS"),
                Instruction::Cmd(_) => {
                    cmd.get_or_insert(s.line);
                    continue;
                }
                _ => continue,
            };
            if slot.is_some() {
                return Err((s.line, format!("{what} may appear only once")));
            }
            *slot = Some((i, s.line));
        }
        for (what, found) in [("LAUNCH", launch), ("CMDS", cmds)] {
            if let Some((i, line)) = found
                && i != last
            {
                return Err((line, format!("{what} must be the last instruction")));
            }
        }
        let (launch, cmds) = (launch.map(|(_, l)| l), cmds.map(|(_, l)| l));
        let used: Vec<_> = [("LAUNCH", launch), ("CMDS", cmds), ("CMD", cmd)]
            .into_iter()
            .filter_map(|(w, l)| l.map(|l| (w, l)))
            .collect();
        if used.len() > 1 {
            let line = used.iter().map(|(_, l)| *l).max().unwrap_or(1);
            let names: Vec<_> = used.iter().map(|(w, _)| *w).collect();
            return Err((
                line,
                format!("{} cannot be used together", names.join(" and ")),
            ));
        }
        Ok(())
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `COPY` or `ADD SOURCE... DEST` (words or a JSON array; no flags).
fn copy(keyword: &str, rest: &str, vars: lexer::Vars) -> Result<Instruction, String> {
    let args = json_or_words(rest, vars)?;
    if let Some(flag) = args.iter().find(|a| a.starts_with("--")) {
        return Err(format!("{keyword} does not take {flag}"));
    }
    let [sources @ .., dest] = args.as_slice() else {
        unreachable!("rest is not empty")
    };
    if sources.is_empty() {
        return Err(format!("{keyword} needs a source and a destination"));
    }
    let (sources, dest) = (sources.to_vec(), dest.clone());
    Ok(match keyword {
        "COPY" => Instruction::Copy { sources, dest },
        _ => Instruction::Add { sources, dest },
    })
}

/// `APPCMDS NAME [...]`'s commands: a JSON array, not empty.
fn app_cmds(name: &str, cmds: &str) -> Result<Vec<String>, String> {
    let cmds = json_array(cmds).map_err(|e| {
        format!(
            "APPCMDS {name} takes a JSON array of strings, e.g. [\"bash\", \"install.sh\"]: {e}"
        )
    })?;
    if cmds.is_empty() {
        return Err(format!("APPCMDS {name} has no command"));
    }
    Ok(cmds)
}

fn check_app_name(name: &str) -> Result<(), String> {
    // Application names become folder names (application/apps/<name>) and release names.
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad application name {name:?}: use letters, digits, '-', '_' and '.'"
        ))
    }
}

fn app_source(s: &str) -> Result<AppSource, String> {
    if let Some(path) = s.strip_prefix("local://") {
        if path.is_empty() {
            return Err("local:// needs a path in the build context".into());
        }
        return Ok(AppSource::Local(PathBuf::from(path)));
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        url::Url::parse(s).map_err(|e| format!("bad URL {s}: {e}"))?;
        return Ok(AppSource::Remote(s.to_string()));
    }
    Err(format!(
        "bad application source {s:?}: use local://PATH (in the build context) or http(s)://URL"
    ))
}

/// `NAME rest...`
fn split_name(rest: &str) -> Result<(&str, &str), String> {
    rest.split_once(char::is_whitespace)
        .map(|(n, r)| (n, r.trim()))
        .filter(|(_, r)| !r.is_empty())
        .ok_or_else(|| "needs an application name and a value".to_string())
}

fn json_array(text: &str) -> Result<Vec<String>, String> {
    serde_json::from_str::<Vec<String>>(text).map_err(|e| e.to_string())
}

/// The JSON form `["a", "b"]` when the text starts with `[`, else words.
fn json_or_words(text: &str, vars: lexer::Vars) -> Result<Vec<String>, String> {
    if text.starts_with('[') {
        let items = json_array(text).map_err(|e| format!("bad JSON array: {e}"))?;
        match vars {
            Some(v) => items.iter().map(|i| lexer::expand_all(i, v)).collect(),
            None => Ok(items),
        }
    } else {
        words(text, vars)
    }
}

fn command(text: &str) -> Result<Command, String> {
    if text.starts_with('[') {
        let argv = json_array(text).map_err(|e| format!("bad JSON array: {e}"))?;
        if argv.is_empty() {
            return Err("an empty command".into());
        }
        Ok(Command::Exec(argv))
    } else {
        Ok(Command::Shell(text.to_string()))
    }
}

/// `K=V K2="v 2"`, or for ENV the legacy `K the value`.
fn key_values(
    keyword: &str,
    text: &str,
    vars: lexer::Vars,
    legacy_form: bool,
) -> Result<Vec<(String, String)>, String> {
    let first = text.split_whitespace().next().unwrap_or("");
    if legacy_form && !first.contains('=') {
        let value = text[first.len()..].trim();
        if !is_name(first) {
            return Err(format!("bad {keyword} name {first:?}"));
        }
        let value = match vars {
            Some(v) => lexer::expand_all(value, v)?,
            None => value.to_string(),
        };
        return Ok(vec![(first.to_string(), value)]);
    }
    words(text, vars)?
        .into_iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("{keyword} takes KEY=VALUE pairs; {w:?} has no '='"))?;
            if k.is_empty() {
                return Err(format!("{keyword}: an empty key in {w:?}"));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests;

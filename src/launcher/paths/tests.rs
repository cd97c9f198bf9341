//! Translation tests. The first ones derive their cases from the tools' clap
//! definitions: every path-marked argument of every tool and subcommand, in
//! every flag form, before and after the other arguments — so a new path
//! flag is covered the day it is added, and a path typed `PathBuf` (which
//! the launcher would not see) fails here.

use std::fs;

use clap::Arg;

use super::*;
use crate::cli::path_arg::is_unmarked_path;
use crate::cli::tools::{command, TOOLS};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Every command of `tool` with the subcommand names leading to it.
fn commands(tool: &str) -> Vec<(Vec<String>, Command)> {
    fn walk(path: Vec<String>, cmd: &Command, out: &mut Vec<(Vec<String>, Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sc in cmd.get_subcommands() {
            let mut p = path.clone();
            p.push(sc.get_name().to_string());
            walk(p, sc, out);
        }
    }
    let mut cmd = command(tool).expect("a tool");
    cmd.build();
    let mut out = Vec::new();
    walk(Vec::new(), &cmd, &mut out);
    out
}

/// A value for an argument that is not under test.
fn filler(arg: &Arg, cwd: &Path) -> String {
    if let Some(kind) = kind_of(arg) {
        let name = format!("fill-{}", arg.get_id());
        return value_for(kind, &name, cwd);
    }
    arg.get_possible_values()
        .first()
        .map(|p| p.get_name().to_string())
        .unwrap_or_else(|| "x".into())
}

/// A value of `kind` naming `name` (created when the tool reads it).
fn value_for(kind: PathKind, name: &str, cwd: &Path) -> String {
    let path = cwd.join(name);
    match kind {
        PathKind::InputDir => fs::create_dir_all(&path).unwrap(),
        PathKind::InputFile | PathKind::InOutFile | PathKind::Key | PathKind::Secret => {
            fs::write(&path, b"").unwrap()
        }
        PathKind::Source => fs::create_dir_all(&path).unwrap(),
        PathKind::OutputDir | PathKind::OutputFile => {}
    }
    match kind {
        PathKind::Source => format!("dir:{name}"),
        PathKind::Secret => format!("file:{name}"),
        _ => name.to_string(),
    }
}

/// The tokens of `arg` given `value` in each form the grammar accepts.
fn forms(arg: &Arg, value: &str) -> Vec<Vec<String>> {
    if arg.is_positional() {
        return vec![vec![value.to_string()]];
    }
    let mut out = Vec::new();
    if let Some(l) = arg.get_long() {
        out.push(vec![format!("--{l}"), value.to_string()]);
        out.push(vec![format!("--{l}={value}")]);
    }
    if let Some(c) = arg.get_short() {
        out.push(vec![format!("-{c}"), value.to_string()]);
        out.push(vec![format!("-{c}{value}")]);
        out.push(vec![format!("-{c}={value}")]);
    }
    out
}

/// Arguments for `path` that make the command parse with `tested` given:
/// the required ones, plus (found by trying) one that `tested` requires.
fn fillers(
    tool: &str,
    path: &[String],
    cmd: &Command,
    tested_id: &str,
    tested: &[String],
    cwd: &Path,
) -> Vec<String> {
    let full = command(tool).unwrap();
    let try_parse = |extra: &[String]| {
        let mut argv = vec![tool.to_string()];
        argv.extend(path.iter().cloned());
        argv.extend(tested.iter().cloned());
        argv.extend(extra.iter().cloned());
        full.clone().try_get_matches_from(argv)
    };
    let mut extra = Vec::new();
    for a in cmd.get_arguments() {
        if a.is_required_set() && a.get_id() != tested_id {
            let v = filler(a, cwd);
            if a.is_positional() {
                extra.push(v);
            } else if let Some(l) = a.get_long() {
                extra.push(format!("--{l}={v}"));
            }
        }
    }
    if try_parse(&extra).is_ok() {
        return extra;
    }
    for a in cmd
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
    {
        let Some(l) = a.get_long() else { continue };
        let mut more = extra.clone();
        more.push(format!("--{l}={}", filler(a, cwd)));
        if try_parse(&more).is_ok() {
            return more;
        }
    }
    panic!(
        "{tool} {path:?}: cannot make {tested:?} parse: {}",
        try_parse(&extra).unwrap_err()
    );
}

#[test]
fn every_path_argument_of_every_tool_is_marked() {
    let mut marked = 0;
    for tool in TOOLS {
        for (path, cmd) in commands(tool) {
            for arg in cmd.get_arguments() {
                assert!(
                    !is_unmarked_path(arg),
                    "{tool} {path:?} --{}: a PathBuf argument the launcher cannot see; \
                     type it InputFile, InputDir, OutputFile or OutputDir (cli::path_arg)",
                    arg.get_id()
                );
                if kind_of(arg).is_some() {
                    marked += 1;
                    assert!(
                        arg.get_value_delimiter().is_none(),
                        "{tool} --{}: a path value must be a whole token's tail",
                        arg.get_id()
                    );
                }
            }
        }
    }
    // genkey 3 + token 16 (flattened target arguments counted per subcommand),
    // build-uki 17 + inspect 3, enroll 10, test-boot 3: a floor, not a count.
    eprintln!("{marked} path-marked arguments");
    assert!(marked >= 45, "only {marked} path arguments found");
}

#[test]
fn every_path_argument_in_every_form_and_order_is_rewritten_and_mounted() {
    let cwd_dir = tempfile::tempdir().unwrap();
    let cwd = cwd_dir.path();
    let mut cases = 0;
    for tool in TOOLS {
        for (path, cmd) in commands(tool) {
            for arg in cmd.get_arguments() {
                let Some(kind) = kind_of(arg) else { continue };
                let name = format!("t-{}-{}", path.join("-"), arg.get_id());
                let value = value_for(kind, &name, cwd);
                for form in forms(arg, &value) {
                    let fill = fillers(tool, &path, &cmd, arg.get_id().as_str(), &form, cwd);
                    for before in [true, false] {
                        let mut argv = path.clone();
                        let at;
                        if before {
                            at = argv.len() + form.len() - 1;
                            argv.extend(form.iter().cloned());
                            argv.extend(fill.iter().cloned());
                        } else {
                            argv.extend(fill.iter().cloned());
                            at = argv.len() + form.len() - 1;
                            argv.extend(form.iter().cloned());
                        }
                        let t = translate(tool, &argv, cwd, None)
                            .unwrap_or_else(|e| panic!("{tool} {argv:?}: {e}"));
                        let host = cwd.join(&name);
                        let inside = container_path(&host);
                        let want = argv[at].replace(&name, &inside.display().to_string());
                        assert_eq!(t.args[at], want, "{tool} {argv:?}");
                        let mount = |ro: bool| {
                            t.mounts.iter().any(|m| {
                                m.host == host && m.container == inside && m.read_only == ro
                            })
                        };
                        match kind {
                            PathKind::OutputDir => {
                                assert!(mount(false), "{tool} {argv:?}: {t:#?}");
                                assert!(t.create_dirs.contains(&host), "{argv:?}");
                            }
                            PathKind::InOutFile => {
                                assert!(mount(false), "{tool} {argv:?}: {t:#?}");
                                assert!(!t.create_dirs.contains(&host), "{argv:?}");
                            }
                            PathKind::OutputFile => {
                                assert!(
                                    t.staged.iter().any(|s| s.parent == cwd
                                        && s.names.contains(&OsString::from(&name))),
                                    "{tool} {argv:?}: {t:#?}"
                                )
                            }
                            _ => assert!(mount(true), "{tool} {argv:?}: {t:#?}"),
                        }
                        assert!(
                            t.values.iter().any(|v| v.token == at && v.is_path),
                            "{argv:?}"
                        );
                        cases += 1;
                    }
                }
            }
        }
    }
    eprintln!("{cases} translations checked");
    assert!(cases >= 200, "only {cases} cases");
}

/// A work directory with `rootfs/`, `keys/` and `layout/`.
fn workdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for sub in ["rootfs", "keys", "layout"] {
        fs::create_dir_all(d.path().join(sub)).unwrap();
    }
    fs::write(d.path().join("keys/db.pem"), b"").unwrap();
    d
}

#[test]
fn the_flags_first_build_uki_line_of_issue_10_mounts_the_rootfs() {
    let d = workdir();
    let w = d.path();
    let inside = |p: &str| container_path(&w.join(p)).display().to_string();
    let t = translate(
        "build-uki",
        &s(&["-t", "uki", "-d", "out", "-k", "keys", "dir:rootfs"]),
        w,
        None,
    )
    .unwrap();
    assert_eq!(
        t.args,
        [
            "-t".to_string(),
            "uki".into(),
            "-d".into(),
            inside("out"),
            "-k".into(),
            inside("keys"),
            format!("dir:{}", inside("rootfs")),
        ]
    );
    let mut mounted: Vec<(PathBuf, bool)> = t
        .mounts
        .iter()
        .map(|m| (m.host.clone(), m.read_only))
        .collect();
    mounted.sort();
    assert_eq!(
        mounted,
        [
            (w.join("keys"), true),
            (w.join("out"), false),
            (w.join("rootfs"), true)
        ],
        "exactly what the arguments name"
    );
    assert!(!t.wants_network("build-uki"));
    assert!(!t.wants_token("build-uki"));
}

#[test]
fn keys_uris_registries_and_refs_are_not_paths() {
    let d = workdir();
    let w = d.path();
    let t = translate(
        "build-uki",
        &s(&[
            "registry.example:5000/acme/os:1",
            "--sb-key=pkcs11:token=a;id=%02",
            "--sb-cert",
            "keys/db.pem",
            "-d",
            "out",
        ]),
        w,
        None,
    )
    .unwrap();
    assert_eq!(t.args[0], "registry.example:5000/acme/os:1");
    assert_eq!(t.args[1], "--sb-key=pkcs11:token=a;id=%02");
    assert!(t.wants_network("build-uki"), "a registry image is pulled");
    assert!(t.wants_token("build-uki"), "a pkcs11: key needs the token");
    // oci:DIR:REF: the directory is the path, the ref stays.
    let t = translate("build-uki", &s(&["oci:layout:v1", "-k", "keys"]), w, None).unwrap();
    assert_eq!(
        t.args[0],
        format!("oci:{}:v1", container_path(&w.join("layout")).display())
    );
    assert!(t
        .mounts
        .iter()
        .any(|m| m.host == w.join("layout") && m.read_only));
}

#[test]
fn defaults_are_mounted_and_inspect_gets_only_its_file() {
    let d = workdir();
    let w = d.path();
    // genkey's default output, `keys` below the working directory.
    let t = translate("genkey", &s(&["Acme Corp"]), w, None).unwrap();
    assert_eq!(t.args, s(&["Acme Corp"]));
    assert_eq!(t.mounts.len(), 1);
    assert_eq!(t.mounts[0].host, w.join("keys"));
    assert!(!t.mounts[0].read_only);
    // build-uki inspect: the parent's -d default is not the inspect's business.
    fs::write(w.join("a.efi"), b"").unwrap();
    let t = translate("build-uki", &s(&["inspect", "a.efi"]), w, None).unwrap();
    assert_eq!(t.mounts.len(), 1, "{:?}", t.mounts);
    assert!(t.mounts[0].read_only);
    assert!(t.create_dirs.is_empty());
}

#[test]
fn root_and_home_are_never_mounted_whole() {
    let d = workdir();
    let w = d.path();
    let e = translate("genkey", &s(&["Acme", "-o", "/"]), w, None).unwrap_err();
    assert!(e.to_string().contains("root directory"), "{e}");
    // build-uki's default -d . from the home directory.
    let e = translate("build-uki", &s(&["dir:rootfs", "-k", "keys"]), w, Some(w)).unwrap_err();
    assert!(e.to_string().contains("home directory"), "{e}");
    let e = translate(
        "build-uki",
        &s(&["--overlay-iso", "..", "dir:rootfs"]),
        &w.join("keys"),
        Some(w),
    )
    .unwrap_err();
    assert!(matches!(e, TranslateError::TooWide { .. }), "{e}");
    // A subdirectory of home is fine.
    translate(
        "build-uki",
        &s(&["dir:rootfs", "-k", "keys", "-d", "out"]),
        w,
        Some(w),
    )
    .unwrap();
}

#[test]
fn output_files_go_through_their_own_directory() {
    let d = workdir();
    let w = d.path();
    fs::write(w.join("VARS.fd"), b"").unwrap();
    let t = translate(
        "enroll",
        &s(&[
            "ovmf",
            "--template",
            "VARS.fd",
            "-k",
            "keys",
            "-o",
            "out/vars.fd",
        ]),
        w,
        None,
    )
    .unwrap();
    assert_eq!(
        t.staged,
        [StagedOutputs {
            parent: w.join("out"),
            names: vec!["vars.fd".into()]
        }]
    );
    assert!(
        !t.mounts
            .iter()
            .any(|m| m.host == w || m.host == w.join("out")),
        "neither the working directory nor the output's parent is mounted: {:?}",
        t.mounts
    );
    assert!(t.create_dirs.contains(&w.join("out")));
    // Written into an output directory that is mounted anyway: no staging.
    fs::write(w.join("m.iso"), b"").unwrap();
    let t = translate(
        "test-boot",
        &s(&["m.iso", "-k", "keys", "--serial-log", "keys/serial.log"]),
        w,
        None,
    )
    .unwrap();
    assert!(t.staged.is_empty());
    assert!(t
        .mounts
        .iter()
        .any(|m| m.host == w.join("keys") && !m.read_only));
}

#[test]
fn a_parse_error_is_claps_own() {
    let d = workdir();
    let e = translate("build-uki", &s(&["-t"]), d.path(), None).unwrap_err();
    let TranslateError::Grammar(g) = e else {
        panic!("{e}")
    };
    assert_eq!(g.kind(), clap::error::ErrorKind::InvalidValue);
    let e = translate("enroll", &s(&["ovmf", "--bogus"]), d.path(), None).unwrap_err();
    assert!(
        e.to_string().contains("unexpected argument '--bogus'"),
        "{e}"
    );
    // --help goes to the tool in its container unchanged.
    let t = translate("genkey", &s(&["token", "create", "--help"]), d.path(), None).unwrap();
    assert_eq!(t.args, s(&["token", "create", "--help"]));
}

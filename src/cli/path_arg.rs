//! Path arguments marked in the grammar itself.
//!
//! Every argument that names something on the host has one of the types
//! below as its value type. The type is the mark: the launcher finds path
//! arguments by asking each `clap::Arg` for its value parser's type
//! ([`kind_of`]), so the tools' definitions are the only list of which
//! arguments are paths and how they are used. A new flag with one of these
//! types is mounted by the launcher without further work; one typed
//! `PathBuf` or `String` is not, and the derived tests in
//! `launcher::paths` refuse a `PathBuf` argument outright.

use std::any::TypeId;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use clap::builder::{PathBufValueParser, StringValueParser, TypedValueParser, ValueParserFactory};
use clap::{Arg, Command, ValueHint};

/// How an argument's value reaches the host file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// A file the tool reads: mounted read-only.
    InputFile,
    /// A directory the tool reads: mounted read-only.
    InputDir,
    /// A file the tool writes: written through a directory made for it.
    OutputFile,
    /// An existing file the tool reads and changes in place (a disk image a
    /// test boot attaches): mounted read-write at its own path, never made.
    InOutFile,
    /// A directory the tool writes into: mounted read-write, created when missing.
    OutputDir,
    /// An image source: `dir:`, `oci:`, `oci-archive:`, `docker-archive:` and
    /// `tar:` carry a host path; registry and engine references do not.
    Source,
    /// A key: a PEM file (read-only) or a `pkcs11:` URI (not a path; asks for the token).
    Key,
    /// A secret: `file:PATH` is read-only input; `prompt` and `env:VAR` are not paths.
    Secret,
}

impl PathKind {
    /// Whether the tool writes through this argument.
    pub fn writes(self) -> bool {
        matches!(
            self,
            PathKind::OutputFile | PathKind::OutputDir | PathKind::InOutFile
        )
    }

    /// The shell-completion hint this kind implies.
    pub fn value_hint(self) -> ValueHint {
        match self {
            PathKind::InputDir | PathKind::OutputDir => ValueHint::DirPath,
            PathKind::InputFile | PathKind::OutputFile | PathKind::InOutFile | PathKind::Key => {
                ValueHint::FilePath
            }
            PathKind::Source | PathKind::Secret => ValueHint::Other,
        }
    }
}

/// Declares a path newtype: its value parser, conversions, and its kind.
macro_rules! path_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(pub PathBuf);

        impl ValueParserFactory for $name {
            type Parser = clap::builder::MapValueParser<PathBufValueParser, fn(PathBuf) -> $name>;
            fn value_parser() -> Self::Parser {
                PathBufValueParser::new().map($name as fn(PathBuf) -> $name)
            }
        }

        impl Deref for $name {
            type Target = Path;
            fn deref(&self) -> &Path {
                &self.0
            }
        }

        impl AsRef<Path> for $name {
            fn as_ref(&self) -> &Path {
                &self.0
            }
        }

        impl From<$name> for PathBuf {
            fn from(p: $name) -> PathBuf {
                p.0
            }
        }

        impl $name {
            /// The kind the launcher treats this type as.
            pub const KIND: PathKind = $kind;
        }
    };
}

/// Declares a reference newtype (a string that may carry a path).
macro_rules! ref_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(pub String);

        impl ValueParserFactory for $name {
            type Parser = clap::builder::MapValueParser<StringValueParser, fn(String) -> $name>;
            fn value_parser() -> Self::Parser {
                StringValueParser::new().map($name as fn(String) -> $name)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(p: $name) -> String {
                p.0
            }
        }

        impl $name {
            /// The kind the launcher treats this type as.
            pub const KIND: PathKind = $kind;
        }
    };
}

path_type!(
    /// A file the tool only reads.
    InputFile,
    PathKind::InputFile
);
path_type!(
    /// A directory the tool only reads.
    InputDir,
    PathKind::InputDir
);
path_type!(
    /// A file the tool writes.
    OutputFile,
    PathKind::OutputFile
);
path_type!(
    /// A directory the tool writes into.
    OutputDir,
    PathKind::OutputDir
);
path_type!(
    /// An existing file the tool changes in place.
    InOutFile,
    PathKind::InOutFile
);
ref_type!(
    /// An image source reference (`dir:PATH`, `oci:DIR[:REF]`, `IMAGE`, ...).
    SourceRef,
    PathKind::Source
);
ref_type!(
    /// A private key: a PEM file or a `pkcs11:` URI.
    KeyRef,
    PathKind::Key
);
ref_type!(
    /// A secret's source: `prompt`, `file:PATH` or `env:VAR`. Kept as text
    /// until the tool parses it, so that no parse error echoes a secret.
    SecretRef,
    PathKind::Secret
);

/// The path kind of an argument, from its value type; `None` for every other argument.
pub fn kind_of(arg: &Arg) -> Option<PathKind> {
    if !arg.get_action().takes_values() {
        return None;
    }
    let id = arg.get_value_parser().type_id();
    [
        (TypeId::of::<InputFile>(), InputFile::KIND),
        (TypeId::of::<InputDir>(), InputDir::KIND),
        (TypeId::of::<OutputFile>(), OutputFile::KIND),
        (TypeId::of::<OutputDir>(), OutputDir::KIND),
        (TypeId::of::<InOutFile>(), InOutFile::KIND),
        (TypeId::of::<SourceRef>(), SourceRef::KIND),
        (TypeId::of::<KeyRef>(), KeyRef::KIND),
        (TypeId::of::<SecretRef>(), SecretRef::KIND),
    ]
    .into_iter()
    .find(|(t, _)| id == *t)
    .map(|(_, k)| k)
}

/// Whether an argument's values are plain `PathBuf`s: a path the launcher
/// would not see. The derived tests use it to keep such arguments out.
pub fn is_unmarked_path(arg: &Arg) -> bool {
    arg.get_action().takes_values() && arg.get_value_parser().type_id() == TypeId::of::<PathBuf>()
}

/// `cmd` with the completion hint of every marked argument set from its kind
/// (recursively), so shells complete files and directories where paths go.
pub fn with_hints(cmd: Command) -> Command {
    cmd.mut_args(|a| match kind_of(&a) {
        Some(k) if a.get_value_hint() == ValueHint::Unknown => a.value_hint(k.value_hint()),
        _ => a,
    })
    .mut_subcommands(with_hints)
}

/// Image-source prefixes whose rest is a host path (`oci:` and the archives may add `:REF`).
pub const SOURCE_PATH_PREFIXES: [&str; 5] =
    ["dir:", "oci:", "oci-archive:", "docker-archive:", "tar:"];

/// The host path a marked value names, split as `(prefix, path, suffix)` so
/// that `prefix + translated path + suffix` is the value for the container;
/// `None` when the value names no host path (a registry image, a `pkcs11:`
/// URI, `prompt`). `exists` answers whether a (relative) path exists on the
/// host, to split `oci:DIR:REF` as the image reader does.
pub fn host_path<'a>(
    kind: PathKind,
    value: &'a str,
    exists: &dyn Fn(&Path) -> bool,
) -> Option<(&'a str, &'a str, &'a str)> {
    match kind {
        PathKind::InputFile
        | PathKind::InputDir
        | PathKind::OutputFile
        | PathKind::OutputDir
        | PathKind::InOutFile => Some(("", value, "")),
        PathKind::Key => (!value.starts_with("pkcs11:")).then_some(("", value, "")),
        PathKind::Secret => value.strip_prefix("file:").map(|p| ("file:", p, "")),
        PathKind::Source => {
            let Some(prefix) = SOURCE_PATH_PREFIXES.iter().find(|p| value.starts_with(*p)) else {
                // A bare existing directory is a rootfs, as the source parser reads it.
                return exists(Path::new(value)).then_some(("", value, ""));
            };
            let rest = &value[prefix.len()..];
            if *prefix == "dir:" || *prefix == "tar:" || exists(Path::new(rest)) {
                return Some((&value[..prefix.len()], rest, ""));
            }
            // PATH:REF: the first colon before which an existing path ends.
            for (i, _) in rest.match_indices(':') {
                if i + 1 < rest.len() && exists(Path::new(&rest[..i])) {
                    return Some((&value[..prefix.len()], &rest[..i], &rest[i..]));
                }
            }
            Some((&value[..prefix.len()], rest, ""))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[arg(long)]
        input: Option<InputFile>,
        #[arg(long)]
        out: Option<OutputDir>,
        #[arg(long)]
        key: Option<KeyRef>,
        #[arg(long)]
        plain: Option<PathBuf>,
        #[arg(long)]
        name: Option<String>,
    }

    #[test]
    fn kinds_come_from_the_value_type() {
        use clap::CommandFactory;
        let cmd = T::command();
        let kind = |id: &str| kind_of(cmd.get_arguments().find(|a| a.get_id() == id).unwrap());
        assert_eq!(kind("input"), Some(PathKind::InputFile));
        assert_eq!(kind("out"), Some(PathKind::OutputDir));
        assert_eq!(kind("key"), Some(PathKind::Key));
        assert_eq!(kind("plain"), None);
        assert_eq!(kind("name"), None);
        let t = T::try_parse_from(["t", "--input", "a/b", "--key=pkcs11:id=%01"]).unwrap();
        assert_eq!(t.input.unwrap().0, PathBuf::from("a/b"));
        let hinted = with_hints(T::command());
        let out = hinted
            .get_arguments()
            .find(|a| a.get_id() == "out")
            .unwrap();
        assert_eq!(out.get_value_hint(), ValueHint::DirPath);
    }

    #[test]
    fn host_paths_of_sources_keys_and_secrets() {
        let exists = |p: &Path| p == Path::new("layout") || p == Path::new("rootdir");
        let hp = |k, v| host_path(k, v, &exists);
        assert_eq!(
            hp(PathKind::Source, "oci:layout:v1"),
            Some(("oci:", "layout", ":v1"))
        );
        assert_eq!(hp(PathKind::Source, "dir:a:b"), Some(("dir:", "a:b", "")));
        assert_eq!(hp(PathKind::Source, "rootdir"), Some(("", "rootdir", "")));
        assert_eq!(hp(PathKind::Source, "registry.example/os:1"), None);
        assert_eq!(hp(PathKind::Source, "docker-daemon:os:1"), None);
        assert_eq!(hp(PathKind::Key, "pkcs11:token=a;id=%02"), None);
        assert_eq!(hp(PathKind::Key, "k.pem"), Some(("", "k.pem", "")));
        assert_eq!(hp(PathKind::Secret, "env:PW"), None);
        assert_eq!(
            hp(PathKind::Secret, "file:pw.txt"),
            Some(("file:", "pw.txt", ""))
        );
    }
}

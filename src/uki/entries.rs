//! Boot entries: which UKIs a build makes, their command lines, and the
//! systemd-boot `loader/entries/*.conf` files that point at them
//! (Boot Loader Specification type #1, Kairos layout under `/EFI/kairos/`).

/// Where UKIs live on the ESP, as Kairos lays them out.
pub const EFI_DIR: &str = "/EFI/kairos";

/// One UKI to build.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// File stem: `norole` → `norole.efi`, `norole.conf`.
    pub name: String,
    /// Menu title.
    pub title: String,
    /// Kernel command line embedded in `.cmdline`.
    pub cmdline: String,
}

/// How the entries' command lines are made.
#[derive(Clone, Debug, Default)]
pub struct CmdlinePlan {
    /// The base command line.
    pub base: String,
    /// `--extend-cmdline`: appended to every entry.
    pub extend: Option<String>,
    /// `--extra-cmdline`: one more entry per value, base + value.
    pub extra: Vec<String>,
    /// `--single-efi-cmdline "Title: args"`: one more entry per value.
    pub single: Vec<String>,
}

/// A bad `--single-efi-cmdline` value.
#[derive(Debug, thiserror::Error)]
#[error(
    "--single-efi-cmdline {0:?}: expected \"Title: arguments\", e.g. \"Debug: rd.debug rd.shell\""
)]
pub struct BadSingleEntry(pub String);

fn join(a: &str, b: &str) -> String {
    match (a.trim(), b.trim()) {
        ("", b) => b.to_string(),
        (a, "") => a.to_string(),
        (a, b) => format!("{a} {b}"),
    }
}

/// A file-name-safe form of a title: lower case, runs of other characters as `_`.
pub fn slug(title: &str) -> String {
    let mut out = String::new();
    for ch in title.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// The entries of a build: the main one, then `--extra-cmdline`, then `--single-efi-cmdline` ones.
pub fn plan_entries(
    name: &str,
    title: &str,
    plan: &CmdlinePlan,
) -> Result<Vec<Entry>, BadSingleEntry> {
    let base = match &plan.extend {
        Some(x) => join(&plan.base, x),
        None => plan.base.clone(),
    };
    let mut entries = vec![Entry {
        name: name.to_string(),
        title: title.to_string(),
        cmdline: base.clone(),
    }];
    for (i, extra) in plan.extra.iter().enumerate() {
        entries.push(Entry {
            name: format!("{name}_extra{}", i + 1),
            title: format!("{title} ({})", extra.trim()),
            cmdline: join(&base, extra),
        });
    }
    for single in &plan.single {
        let (t, args) = single
            .split_once(':')
            .ok_or_else(|| BadSingleEntry(single.clone()))?;
        let s = slug(t);
        if s.is_empty() {
            return Err(BadSingleEntry(single.clone()));
        }
        entries.push(Entry {
            name: format!("{name}_{s}"),
            title: format!("{title} ({})", t.trim()),
            cmdline: join(&base, args),
        });
    }
    Ok(entries)
}

/// The `loader/entries/<name>.conf` text of an entry.
pub fn entry_conf(entry: &Entry, version: Option<&str>, include_cmdline: bool) -> String {
    let mut s = format!("title {}\nefi {EFI_DIR}/{}.efi\n", entry.title, entry.name);
    if let Some(v) = version {
        s.push_str(&format!("version {v}\n"));
    }
    if include_cmdline {
        s.push_str(&format!("cmdline {}\n", entry.cmdline));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_from_flags() {
        let plan = CmdlinePlan {
            base: "console=ttyS0".into(),
            extend: Some("rd.debug".into()),
            extra: vec![],
            single: vec!["Debug Shell: rd.shell".into()],
        };
        let e = plan_entries("norole", "My OS", &plan).unwrap();
        assert_eq!(e[0].cmdline, "console=ttyS0 rd.debug");
        assert_eq!(e[1].name, "norole_debug_shell");
        assert_eq!(e[1].cmdline, "console=ttyS0 rd.debug rd.shell");
        let conf = entry_conf(&e[1], Some("1.2"), true);
        assert_eq!(conf, "title My OS (Debug Shell)\nefi /EFI/kairos/norole_debug_shell.efi\nversion 1.2\ncmdline console=ttyS0 rd.debug rd.shell\n");
        let bad = CmdlinePlan {
            single: vec!["no colon".into()],
            ..Default::default()
        };
        assert!(plan_entries("n", "t", &bad).is_err());
    }
}

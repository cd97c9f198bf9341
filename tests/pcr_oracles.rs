//! PCR 11 prediction and `.pcrsig` judged by tools we did not write:
//! systemd-measure 252 (host) and 254 (bookworm-backports, unpacked by
//! scripts/fetch-assets.sh), ukify 254, objcopy and openssl.
//!
//! Each stub generation is paired with its own systemd-measure (252 ↔ 252,
//! 254 ↔ 254): the two measure different section sets, which is the point.
//! A missing tool or asset fails the test with the script to run; nothing
//! skips.

mod common;

use common::tools::{require_tool, run_ok};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sbkit::keys::{DigestAlgorithm, FileSigner};
use sbkit::pe::PeLayout;
use sbkit::uki::assemble::{assemble, PcrPolicy, UkiPayload};
use sbkit::uki::pcr::{default_phase_paths, predict_uki, PhasePath, ALL_BANKS};
use sbkit::uki::pcrsig::{pcrpkey_pem, PcrSig, DEFAULT_SIGNED_BANKS};
use sbkit::uki::stub::{self, MeasuredSetSource};

// ---------------------------------------------------------------- helpers ---

fn cache() -> PathBuf {
    std::env::var_os("SBKIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache"))
}

/// A file under the asset cache; fails naming the script that fetches it.
fn asset(rel: &str) -> PathBuf {
    let p = cache().join("assets").join(rel);
    assert!(
        p.exists(),
        "test asset {} is missing: run scripts/fetch-assets.sh (tests never skip)",
        p.display()
    );
    p
}

fn stub_path(generation: u32) -> PathBuf {
    asset(&format!(
        "systemd-{generation}/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    ))
}

/// systemd-measure 254 from the unpacked bookworm-backports packages, with its
/// own libsystemd-shared-254 (the host has 252's).
fn measure_254() -> Command {
    let tool = asset("systemd-254/lib/systemd/systemd-measure");
    let lib = asset("systemd-254/usr/lib/x86_64-linux-gnu/systemd");
    let mut c = Command::new(tool);
    c.env("LD_LIBRARY_PATH", lib);
    c
}

/// systemd-measure 252: unpacked into the cache when scripts/fetch-assets.sh
/// provides it (`systemd-252/lib/systemd/systemd-measure` with its
/// libsystemd-shared), else the host's (Debian 12's systemd package).
fn measure_252() -> Command {
    let cached = cache().join("assets/systemd-252/lib/systemd/systemd-measure");
    let make = || {
        if cached.is_file() {
            let mut c = Command::new(&cached);
            c.env(
                "LD_LIBRARY_PATH",
                cache().join("assets/systemd-252/usr/lib/x86_64-linux-gnu/systemd"),
            );
            c
        } else {
            Command::new(require_tool("/usr/lib/systemd/systemd-measure"))
        }
    };
    let out = run_ok(make().arg("--version"));
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with("systemd 252"),
        "{:?} is not systemd 252 ({version}); the 252 oracle needs Debian 12's systemd: run scripts/install-deps.sh",
        make().get_program()
    );
    make()
}

/// ukify 254 under the system Python, which has python3-pefile.
fn ukify_254() -> Command {
    let python = require_tool("/usr/bin/python3");
    let probe = Command::new(&python)
        .args(["-c", "import pefile"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        probe.status.success(),
        "ukify needs python3-pefile: run scripts/install-deps.sh (apt-get install python3-pefile)"
    );
    let mut c = Command::new(python);
    c.arg(asset("systemd-254/lib/systemd/ukify"));
    // ukify runs systemd-measure 254, which needs its own libsystemd-shared.
    c.env(
        "LD_LIBRARY_PATH",
        asset("systemd-254/usr/lib/x86_64-linux-gnu/systemd"),
    );
    c
}

/// Runs systemd-measure `sign`, failing with the fix when libtss2 is absent
/// (254 dlopens it even to sign offline).
fn run_sign(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("TPM2 support not installed"),
        "systemd-measure sign needs libtss2 (libtss2-esys-3.0.2-0 libtss2-rc0 libtss2-mu0): run scripts/install-deps.sh"
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed: {stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}

/// The UKI's inputs, written as files for the oracles.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::write(d.join("osrel"), "ID=sbkit-test\nVERSION_ID=1\n").unwrap();
        // Odd lengths, so alignment padding would show if anything measured it.
        fs::write(d.join("cmdline"), "console=ttyS0 quiet").unwrap();
        let mut x = 0x1234_5678u32;
        let initrd: Vec<u8> = (0..4099)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        fs::write(d.join("initrd"), initrd).unwrap();
        fs::write(d.join("uname"), "6.1.0-sbkit-test").unwrap();
        let openssl = require_tool("openssl");
        run_ok(
            Command::new(&openssl)
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(d.join("priv.pem")),
        );
        run_ok(
            Command::new(&openssl)
                .args(["pkey", "-pubout", "-in"])
                .arg(d.join("priv.pem"))
                .arg("-out")
                .arg(d.join("pub.pem")),
        );
        Inputs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `--name=path` arguments for systemd-measure.
    fn measure_args(&self, names: &[&str]) -> Vec<String> {
        let mut v = vec![format!("--linux={}", asset("vmlinuz").display())];
        for n in names {
            let file = match *n {
                "pcrpkey" => self.path("pub.pem"),
                other => self.path(other),
            };
            v.push(format!("--{n}={}", file.display()));
        }
        v
    }
}

/// Phase paths the tests check: the four defaults and the empty path.
fn all_phases() -> Vec<PhasePath> {
    let mut p = default_phase_paths();
    p.push(PhasePath::empty());
    p
}

fn phase_args(phases: &[PhasePath]) -> Vec<String> {
    phases.iter().map(|p| format!("--phase={p}")).collect()
}

fn bank_args() -> Vec<String> {
    ALL_BANKS
        .iter()
        .map(|b| format!("--bank={}", b.name()))
        .collect()
}

/// systemd-measure `calculate --json=short` output as (bank, phase, hex).
fn parse_calculate(stdout: &[u8]) -> Vec<(String, String, String)> {
    let v: serde_json::Value = serde_json::from_slice(stdout).expect("calculate JSON");
    let mut out = Vec::new();
    for (bank, entries) in v.as_object().expect("JSON object") {
        for e in entries.as_array().expect("bank list") {
            assert_eq!(e["pcr"], 11);
            out.push((
                bank.clone(),
                // The empty path is printed without a "phase" key.
                e.get("phase")
                    .and_then(|p| p.as_str())
                    .unwrap_or("")
                    .to_string(),
                e["hash"].as_str().expect("hash").to_string(),
            ));
        }
    }
    out
}

fn bank(name: &str) -> DigestAlgorithm {
    *ALL_BANKS
        .iter()
        .find(|b| b.name() == name)
        .unwrap_or_else(|| panic!("unknown bank {name}"))
}

/// Asserts every oracle value equals our prediction, and that all banks ×
/// phases were covered.
fn assert_matches(
    oracle: &[(String, String, String)],
    ours: &sbkit::uki::pcr::Pcr11Prediction,
    phases: &[PhasePath],
    what: &str,
) {
    assert_eq!(
        oracle.len(),
        ALL_BANKS.len() * phases.len(),
        "{what}: {oracle:?}"
    );
    for (b, phase, hash) in oracle {
        let p = PhasePath::parse(phase).unwrap();
        let mine = ours
            .value(bank(b), &p)
            .unwrap_or_else(|| panic!("{what}: no prediction for {b} {phase:?}"));
        assert_eq!(&hex::encode(mine), hash, "{what}: {b} phase {phase:?}");
    }
}

/// Builds a UKI on the 252 stub with objcopy, sections in a PE order unlike
/// the measurement order; `.uname` is included although 252 does not measure it.
fn build_252_uki(inputs: &Inputs) -> PathBuf {
    let stub = stub_path(252);
    let data = fs::read(&stub).unwrap();
    let pe = PeLayout::parse(&data).expect("252 stub is a PE");
    assert!(pe.pe32_plus, "252 stub is PE32+");
    let end = pe
        .sections
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size))
        .max()
        .unwrap();
    let base = pe.image_base;
    let mut vma = (end + 0xfff) & !0xfff;
    let mut cmd = Command::new(require_tool("objcopy"));
    let vmlinuz = asset("vmlinuz");
    let files = [
        (".cmdline", inputs.path("cmdline")),
        (".initrd", inputs.path("initrd")),
        (".uname", inputs.path("uname")),
        (".osrel", inputs.path("osrel")),
        (".pcrpkey", inputs.path("pub.pem")),
        (".linux", vmlinuz),
    ];
    for (name, file) in &files {
        let len = fs::metadata(file).unwrap().len();
        cmd.arg("--add-section")
            .arg(format!("{name}={}", file.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={:#x}", base + vma));
        vma = (vma + len + 0xfff) & !0xfff;
    }
    let uki = inputs.path("uki252.efi");
    run_ok(cmd.arg(&stub).arg(&uki));
    uki
}

/// Builds a UKI on the 254 stub with ukify 254, which also signs PCR 11 with
/// systemd-measure 254 (default banks and phases) into `.pcrsig`.
fn build_254_uki(inputs: &Inputs) -> PathBuf {
    let uki = inputs.path("uki254.efi");
    run_ok(
        ukify_254()
            .arg("build")
            .arg(format!("--stub={}", stub_path(254).display()))
            .arg(format!("--linux={}", asset("vmlinuz").display()))
            .arg(format!("--initrd={}", inputs.path("initrd").display()))
            .arg(format!("--cmdline=@{}", inputs.path("cmdline").display()))
            .arg(format!("--os-release=@{}", inputs.path("osrel").display()))
            .arg("--uname=6.1.0-sbkit-test")
            .arg(format!(
                "--pcr-private-key={}",
                inputs.path("priv.pem").display()
            ))
            .arg(format!(
                "--pcr-public-key={}",
                inputs.path("pub.pem").display()
            ))
            .arg(format!(
                "--tools={}",
                asset("systemd-254/lib/systemd").display()
            ))
            .arg(format!("--output={}", uki.display())),
    );
    // ukify merges the stub's and the kernel's SBAT; extract what it wrote
    // (objcopy dumps VirtualSize bytes) for systemd-measure --sbat.
    run_ok(
        Command::new(require_tool("objcopy"))
            .args(["-O", "binary", "--only-section=.sbat"])
            .arg(&uki)
            .arg(inputs.path("sbat")),
    );
    uki
}

fn section_of(pe: &Path, name: &str, out: &Path) -> Vec<u8> {
    run_ok(
        Command::new(require_tool("objcopy"))
            .args(["-O", "binary"])
            .arg(format!("--only-section={name}"))
            .arg(pe)
            .arg(out),
    );
    fs::read(out).unwrap()
}

// ------------------------------------------------------------------ tests ---

#[test]
fn real_stubs_carry_their_measured_sets() {
    let s252 = stub::inspect_file(&stub_path(252)).unwrap();
    let s254 = stub::inspect_file(&stub_path(254)).unwrap();
    for (s, major) in [(&s252, 252), (&s254, 254)] {
        let v = s.version.as_ref().expect("version from .sdmagic");
        assert_eq!(v.major, major, "{v:?}");
        assert!(!s.signed, "Debian's stubs ship unsigned");
        assert!(
            s.sbat.as_deref().unwrap_or("").starts_with("sbat,1,"),
            "{:?}",
            s.sbat
        );
        let m = s.measured().unwrap();
        assert_eq!(
            m.source,
            MeasuredSetSource::StubTable,
            "notes: {:?}",
            s.notes
        );
    }
    assert!(s254.version.as_ref().unwrap().full.starts_with("254.26"));
    let t252 = s252.measured().unwrap();
    let t254 = s254.measured().unwrap();
    assert_eq!(
        t252.table.as_deref().unwrap(),
        [".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrsig", ".pcrpkey"]
    );
    assert_eq!(
        t254.table.as_deref().unwrap(),
        [
            ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".uname", ".sbat",
            ".pcrsig", ".pcrpkey"
        ]
    );
    assert_eq!(
        t252.sections,
        [".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"]
    );
    let extra: Vec<&String> = t254
        .sections
        .iter()
        .filter(|s| !t252.sections.contains(s))
        .collect();
    assert_eq!(extra, [".uname", ".sbat"]);
    // The fallback table agrees with what the binaries say for these two.
    for (t, major) in [(t252, 252), (t254, 254)] {
        assert_eq!(
            t.sections,
            stub::measured_sections_for_version(major).unwrap()
        );
    }
}

#[test]
fn systemd_measure_252_agrees_with_prediction() {
    let inputs = Inputs::new();
    let uki = build_252_uki(&inputs);
    let uki_bytes = fs::read(&uki).unwrap();
    let set = stub::inspect_file(&stub_path(252)).unwrap();
    let set = set.measured().unwrap();
    // The finished UKI still tells its stub's set (payload is not scanned).
    assert_eq!(stub::inspect(&uki_bytes).unwrap().measured().unwrap(), set);

    let phases = all_phases();
    let out = run_ok(
        measure_252()
            .arg("calculate")
            .args(inputs.measure_args(&["osrel", "cmdline", "initrd", "pcrpkey"]))
            .args(bank_args())
            .args(phase_args(&phases))
            .arg("--json=short"),
    );
    let oracle = parse_calculate(&out.stdout);
    let ours = predict_uki(&uki_bytes, &set.sections, &ALL_BANKS, &phases).unwrap();
    assert_matches(&oracle, &ours, &phases, "systemd-measure 252 vs 252 stub");
    // 252 measures neither .uname nor the stub's own .sbat.
    assert_eq!(ours.not_measured, [".sbat", ".uname"]);

    // Control: the 254 set over the same UKI (it holds .uname and .sbat)
    // gives other values, so the stub's own table is what made this match.
    let wrong = stub::measured_sections_for_version(254).unwrap();
    let other = predict_uki(&uki_bytes, &wrong, &ALL_BANKS, &phases).unwrap();
    assert_ne!(other.banks, ours.banks);
}

#[test]
fn systemd_measure_254_agrees_with_prediction() {
    let inputs = Inputs::new();
    let uki = build_254_uki(&inputs);
    let uki_bytes = fs::read(&uki).unwrap();
    let info = stub::inspect_file(&stub_path(254)).unwrap();
    let set = info.measured().unwrap();
    assert_eq!(stub::inspect(&uki_bytes).unwrap().measured().unwrap(), set);

    let phases = all_phases();
    let out = run_ok(
        measure_254()
            .arg("calculate")
            .args(inputs.measure_args(&["osrel", "cmdline", "initrd", "uname", "sbat", "pcrpkey"]))
            .args(bank_args())
            .args(phase_args(&phases))
            .arg("--json=short"),
    );
    let oracle = parse_calculate(&out.stdout);
    let ours = predict_uki(&uki_bytes, &set.sections, &ALL_BANKS, &phases).unwrap();
    assert_matches(&oracle, &ours, &phases, "systemd-measure 254 vs 254 stub");
    let names: Vec<&str> = ours.measured.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [".linux", ".osrel", ".cmdline", ".initrd", ".uname", ".sbat", ".pcrpkey"]
    );
    assert_eq!(ours.not_measured, [".pcrsig"]);

    let wrong = stub::measured_sections_for_version(252).unwrap();
    let other = predict_uki(&uki_bytes, &wrong, &ALL_BANKS, &phases).unwrap();
    assert_ne!(other.banks, ours.banks);
}

#[test]
fn systemd_measure_254_sign_equals_ours_byte_for_byte() {
    let inputs = Inputs::new();
    let uki = build_254_uki(&inputs);
    let uki_bytes = fs::read(&uki).unwrap();
    let set = stub::inspect(&uki_bytes).unwrap();
    let set = set.measured().unwrap();
    let key = FileSigner::load(&inputs.path("priv.pem")).unwrap();
    let sections = ["osrel", "cmdline", "initrd", "uname", "sbat", "pcrpkey"];
    let keys = [
        format!("--private-key={}", inputs.path("priv.pem").display()),
        format!("--public-key={}", inputs.path("pub.pem").display()),
    ];

    // Defaults on both sides: systemd-measure signs all banks and the four
    // default phase paths when given no --bank/--phase (what ukify relies on).
    let theirs = run_sign(
        measure_254()
            .arg("sign")
            .args(inputs.measure_args(&sections))
            .args(&keys),
    );
    let prediction = predict_uki(
        &uki_bytes,
        &set.sections,
        &ALL_BANKS,
        &default_phase_paths(),
    )
    .unwrap();
    let ours = PcrSig::sign(
        &key,
        &prediction,
        &DEFAULT_SIGNED_BANKS,
        &default_phase_paths(),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ours.to_section_bytes()),
        String::from_utf8_lossy(&theirs)
    );

    // One bank, one phase path, chosen explicitly.
    let phase = PhasePath::parse("enter-initrd:leave-initrd").unwrap();
    let theirs = run_sign(
        measure_254()
            .arg("sign")
            .args(inputs.measure_args(&sections))
            .args(&keys)
            .arg("--bank=sha256")
            .arg(format!("--phase={phase}"))
            .arg("--json=short"),
    );
    let ours = PcrSig::sign(&key, &prediction, &[DigestAlgorithm::Sha256], &[phase]).unwrap();
    assert_eq!(ours.to_section_bytes(), theirs);

    // What ukify embedded: same entries (ukify re-serializes the JSON with
    // Python's separators, so compare values), and the same .pcrpkey.
    let embedded = section_of(&uki, ".pcrsig", &inputs.path("pcrsig.json"));
    let embedded: serde_json::Value =
        serde_json::from_slice(embedded.split(|&b| b == 0).next().unwrap()).unwrap();
    let all = PcrSig::sign(
        &key,
        &prediction,
        &DEFAULT_SIGNED_BANKS,
        &default_phase_paths(),
    )
    .unwrap();
    assert_eq!(
        embedded,
        serde_json::from_str::<serde_json::Value>(&all.to_json()).unwrap()
    );
    let pcrpkey = section_of(&uki, ".pcrpkey", &inputs.path("pcrpkey.pem"));
    assert_eq!(
        pcrpkey,
        pcrpkey_pem(&sbkit::keys::Signer::public_key_der(&key)).unwrap()
    );
}

#[test]
fn pcr_signatures_verify_with_openssl() {
    let inputs = Inputs::new();
    let uki = fs::read(build_252_uki(&inputs)).unwrap();
    let set = stub::inspect(&uki).unwrap();
    let prediction = predict_uki(
        &uki,
        &set.measured().unwrap().sections,
        &ALL_BANKS,
        &default_phase_paths(),
    )
    .unwrap();
    let key = FileSigner::load(&inputs.path("priv.pem")).unwrap();
    let sig = PcrSig::sign(&key, &prediction, &ALL_BANKS, &default_phase_paths()).unwrap();
    let pub_der = run_ok(
        Command::new(require_tool("openssl"))
            .args([
                "rsa",
                "-pubin",
                "-RSAPublicKey_out",
                "-outform",
                "DER",
                "-in",
            ])
            .arg(inputs.path("pub.pem")),
    )
    .stdout;
    let pkfp = hex::encode(DigestAlgorithm::Sha256.digest(&pub_der));
    use base64::Engine as _;
    let mut checked = 0;
    for b in ALL_BANKS {
        for e in sig.entries(b) {
            assert_eq!(e.pcrs, [11]);
            assert_eq!(e.pkfp, pkfp, "pkfp = SHA-256 of the PKCS#1 RSAPublicKey");
            fs::write(inputs.path("pol.bin"), hex::decode(&e.pol).unwrap()).unwrap();
            fs::write(
                inputs.path("sig.bin"),
                base64::engine::general_purpose::STANDARD
                    .decode(&e.sig)
                    .unwrap(),
            )
            .unwrap();
            let out = run_ok(
                Command::new(require_tool("openssl"))
                    .arg("dgst")
                    .arg(format!("-{}", b.name()))
                    .arg("-verify")
                    .arg(inputs.path("pub.pem"))
                    .arg("-signature")
                    .arg(inputs.path("sig.bin"))
                    .arg(inputs.path("pol.bin")),
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Verified OK");
            checked += 1;
        }
    }
    assert_eq!(checked, 16);
}

/// build-uki's own assembly (not objcopy's, not ukify's) on each stub of the
/// default matrix, 252 included: systemd-measure of the same generation,
/// fed the sections objcopy extracts from our UKI, computes the PCR 11 our
/// assembly predicted and signed into `.pcrsig`.
#[test]
fn our_assembled_ukis_match_systemd_measure_on_252_and_254() {
    let inputs = Inputs::new();
    let key = FileSigner::load(&inputs.path("priv.pem")).unwrap();
    let linux = fs::read(asset("vmlinuz")).unwrap();
    let initrd = fs::read(inputs.path("initrd")).unwrap();
    let osrel = fs::read(inputs.path("osrel")).unwrap();
    let phases = all_phases();
    for generation in [252, 254] {
        let stub_bytes = fs::read(stub_path(generation)).unwrap();
        let info = stub::inspect(&stub_bytes).unwrap();
        let measured = info.measured().unwrap().sections.clone();
        let payload = UkiPayload {
            linux: &linux,
            initrd: &initrd,
            osrel: &osrel,
            cmdline: "console=ttyS0 quiet",
            uname: Some("6.1.0-sbkit-test"),
            splash: None,
            dtb: None,
        };
        let policy = PcrPolicy {
            signer: &key,
            predicted_banks: ALL_BANKS.to_vec(),
            signed_banks: DEFAULT_SIGNED_BANKS.to_vec(),
            phases: default_phase_paths(),
        };
        let uki = assemble(&stub_bytes, &payload, &measured, Some(&policy)).unwrap();
        let file = inputs.path(&format!("ours{generation}.efi"));
        fs::write(&file, &uki.image).unwrap();
        let ours = predict_uki(&uki.image, &measured, &ALL_BANKS, &phases).unwrap();
        let at_build = uki.prediction.as_ref().unwrap();
        for b in ALL_BANKS {
            assert_eq!(
                at_build.value(b, &PhasePath::empty()),
                ours.value(b, &PhasePath::empty()),
                "{generation}: the prediction at build time equals the one read back"
            );
        }
        let mut args = Vec::new();
        for name in &measured {
            let n = name.trim_start_matches('.');
            let out = inputs.path(&format!("{generation}-{n}"));
            section_of(&file, name, &out);
            args.push(format!("--{n}={}", out.display()));
        }
        let mut cmd = if generation == 252 {
            measure_252()
        } else {
            measure_254()
        };
        let out = run_ok(
            cmd.arg("calculate")
                .args(args)
                .args(bank_args())
                .args(phase_args(&phases))
                .arg("--json=short"),
        );
        let oracle = parse_calculate(&out.stdout);
        assert_matches(
            &oracle,
            &ours,
            &phases,
            &format!(
                "systemd-measure {generation} vs build-uki's assembly on the {generation} stub"
            ),
        );
    }
}

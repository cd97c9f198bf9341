//! Virtual YubiKeys over PC/SC: a private pcscd with vsmartcard's vpcd
//! reader driver, and one [`applet::Piv`] per reader slot, connected to vpcd
//! over TCP on 127.0.0.1 the way vsmartcard's vicc does.
//!
//! pcscd 1.9 ignores PCSCLITE_CSOCK_NAME (its clients honour it), so the
//! daemon runs in its own mount namespace with a test directory bound over
//! /run/pcscd: its socket appears in the test directory, and every client
//! started with [`VirtualPcsc::apply`] talks to it — never to the host's
//! pcscd or a real YubiKey.
//!
//! vpcd protocol: each message is a 2-byte big-endian length and a payload;
//! a 1-byte payload is a control code (0 power off, 1 power on, 2 reset,
//! 4 get ATR, answered with the ATR); anything else is a command APDU,
//! answered with the response APDU.

pub mod applet;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use applet::Piv;

/// The vpcd reader driver (Debian's vsmartcard-vpcd).
pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";

/// OpenSC's PKCS#11 module (Debian's opensc-pkcs11), the independent
/// PKCS#11 view of the cards.
pub const OPENSC_MODULE: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";

/// A private pcscd with virtual cards.
pub struct VirtualPcsc {
    pcscd: Child,
    socket: PathBuf,
    /// The cards, shared with their connection threads.
    pub cards: Vec<Arc<Mutex<Piv>>>,
    /// Reader names, in card order.
    pub readers: Vec<String>,
}

fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two free consecutive TCP ports");
}

fn serve(stream: TcpStream, card: Arc<Mutex<Piv>>) {
    let mut s = stream;
    loop {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let n = usize::from(u16::from_be_bytes(len));
        let mut msg = vec![0u8; n];
        if s.read_exact(&mut msg).is_err() {
            return;
        }
        let reply = {
            let mut c = card.lock().unwrap();
            if n == 1 {
                match msg[0] {
                    0 | 2 => {
                        c.reset();
                        None
                    }
                    1 => None,
                    4 => Some(applet::ATR.to_vec()),
                    _ => None,
                }
            } else {
                let r = c.process(&msg);
                if std::env::var_os("VPIV_TRACE").is_some() {
                    eprintln!("vpiv > {}", hex::encode(&msg[..msg.len().min(40)]));
                    eprintln!(
                        "vpiv < {} ({} bytes)",
                        hex::encode(&r[r.len().saturating_sub(2)..]),
                        r.len()
                    );
                }
                Some(r)
            }
        };
        if let Some(r) = reply {
            let mut out = (r.len() as u16).to_be_bytes().to_vec();
            out.extend(r);
            if s.write_all(&out).is_err() {
                return;
            }
        }
    }
}

impl VirtualPcsc {
    /// Starts pcscd in `dir` with one reader of two slots and the given
    /// cards in them (one or two).
    pub fn start(dir: &Path, cards: Vec<Piv>) -> VirtualPcsc {
        assert!(
            Path::new(VPCD_DRIVER).is_file(),
            "{VPCD_DRIVER} missing: run scripts/install-deps.sh (vsmartcard-vpcd); tests never skip"
        );
        let pcscd = super::common::tools::require_tool("pcscd");
        let unshare = super::common::tools::require_tool("unshare");
        assert!(cards.len() <= 2, "one vpcd reader has two slots");
        let conf = dir.join("reader.conf.d");
        let run = dir.join("run");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        let port = free_port_pair();
        std::fs::write(
            conf.join("vpcd"),
            format!(
                "FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:{port}\nLIBPATH {VPCD_DRIVER}\nCHANNELID {port}\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("pcscd.log")).unwrap();
        let child = Command::new(unshare)
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mkdir -p /run/pcscd && mount --bind '{}' /run/pcscd && exec '{}' --foreground --config '{}'",
                run.display(),
                pcscd.display(),
                conf.display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pcscd");
        let socket = run.join("pcscd.comm");
        let mut me = VirtualPcsc {
            pcscd: child,
            socket,
            cards: Vec::new(),
            readers: Vec::new(),
        };
        let start = Instant::now();
        for (i, card) in cards.into_iter().enumerate() {
            let card = Arc::new(Mutex::new(card));
            let stream = loop {
                match TcpStream::connect(("127.0.0.1", port + i as u16)) {
                    Ok(s) => break s,
                    Err(_) if start.elapsed() < Duration::from_secs(20) => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    Err(e) => panic!(
                        "vpcd does not listen on {}: {e}; pcscd log:\n{}",
                        port + i as u16,
                        std::fs::read_to_string(dir.join("pcscd.log")).unwrap_or_default()
                    ),
                }
            };
            stream.set_nodelay(true).ok();
            let c = card.clone();
            std::thread::spawn(move || serve(stream, c));
            me.cards.push(card);
            me.readers.push(format!("Virtual PCD 00 {i:02}"));
        }
        // Wait until pcscd reports the cards present.
        let opensc_tool = super::common::tools::require_tool("opensc-tool");
        loop {
            let mut c = Command::new(&opensc_tool);
            me.apply(&mut c);
            let out = c.arg("-l").output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let present = text
                .lines()
                .filter(|l| l.contains("Virtual PCD") && l.contains("Yes"))
                .count();
            if present >= me.cards.len() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the virtual cards do not show up:\n{text}\npcscd log:\n{}",
                std::fs::read_to_string(dir.join("pcscd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        me
    }

    /// Points a client command at this pcscd.
    pub fn apply(&self, c: &mut Command) {
        c.env("PCSCLITE_CSOCK_NAME", &self.socket);
    }

    /// Runs Yubico's `ykman` on the card in `reader` (its output is judged
    /// by the caller, so a failure is returned, not a panic).
    pub fn ykman(&self, reader: &str, args: &[&str]) -> Output {
        let mut c = Command::new(super::common::tools::require_tool("ykman"));
        self.apply(&mut c);
        c.args(["--reader", reader]).args(args);
        c.output().unwrap()
    }

    /// `pkcs11-tool` with OpenSC's module on the slot whose description is
    /// `reader`.
    pub fn pkcs11_tool(&self, reader: &str) -> Command {
        use super::common::tools::{require_tool, run_ok};
        assert!(
            Path::new(OPENSC_MODULE).is_file(),
            "{OPENSC_MODULE} missing: run scripts/install-deps.sh (opensc-pkcs11); tests never skip"
        );
        let mut l = Command::new(require_tool("pkcs11-tool"));
        self.apply(&mut l);
        let list = run_ok(l.args(["--module", OPENSC_MODULE, "-L"]));
        let t = String::from_utf8_lossy(&list.stdout).into_owned();
        let slot = t
            .lines()
            .filter(|line| line.starts_with("Slot ") && line.contains(reader))
            .filter_map(|line| {
                line.split_whitespace()
                    .nth(2)
                    .map(|s| s.trim_start_matches('(').trim_end_matches("):").to_string())
            })
            .next_back()
            .unwrap_or_else(|| panic!("no slot for {reader}:\n{t}"));
        let mut c = Command::new(require_tool("pkcs11-tool"));
        self.apply(&mut c);
        c.args(["--module", OPENSC_MODULE, "--slot", &slot]);
        c
    }
}

impl Drop for VirtualPcsc {
    fn drop(&mut self) {
        // Only the pcscd this harness started, by its own handle.
        let _ = self.pcscd.kill();
        let _ = self.pcscd.wait();
    }
}

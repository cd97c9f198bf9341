//! Running a tool that insists on a terminal (age reads passphrases only
//! from /dev/tty) on a pseudo-terminal, answering its prompts.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::tools::require_tool;

/// Runs `age ARGS` with its terminal on a pty, typing `answers` (one per
/// passphrase prompt) when age asks; returns age's exit status and output.
pub fn age_on_pty(args: &[&str], answers: &[&str]) -> (bool, String) {
    use nix::pty::openpty;
    let age = require_tool("age");
    let pty = openpty(None, None).expect("openpty");
    let slave: OwnedFd = pty.slave;
    let master: OwnedFd = pty.master;
    let slave_fd = slave.as_raw_fd();
    let mut cmd = Command::new(age);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: only async-signal-safe calls between fork and exec: make the
    // pty the child's controlling terminal, where age opens /dev/tty.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if nix::libc::ioctl(slave_fd, nix::libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn age");
    drop(slave);
    let mut m = std::fs::File::from(master);
    nix::fcntl::fcntl(
        &m,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut seen = String::new();
    let mut answered = 0;
    let start = Instant::now();
    loop {
        let mut buf = [0u8; 512];
        match m.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => break, // EIO: the child closed the terminal
        }
        let prompts = seen.to_lowercase().matches("passphrase").count();
        if answered < answers.len() && prompts > answered {
            // Give age the time to switch echo off before typing.
            std::thread::sleep(Duration::from_millis(200));
            m.write_all(format!("{}\r", answers[answered]).as_bytes())
                .unwrap();
            answered += 1;
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), seen);
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "age hangs; terminal so far:\n{seen}"
        );
    }
    (child.wait().unwrap().success(), seen)
}

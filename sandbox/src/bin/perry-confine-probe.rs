//! perry-confine-probe: tries things and reports what happened, as one JSON object on stdout
//! (`{"probe": "ok" | "errno:N" | ..., ...}`). It applies no confinement itself.
//!
//! It exists so the enforcement tests exercise the real kernel: it is the workload of
//! `native::run` under a tier's production `ProfileStep` (`tests/confine.rs`,
//! `tests/native_profile.rs`), and of a podman container running the exported OCI profile
//! (`tests/confine_podman.rs`).
//!
//! Usage: `perry-confine-probe PROBE...`
//!
//! Probes: socket_inet socket_inet6 socket_unix socketpair_unix unshare mount ptrace keyctl bpf
//! io_uring_setup personality_set personality_query clone_newns clone_newuser clone3 tiocsti
//! tiocsti_hi thread fork read:PATH write:PATH status exec:CMD[,ARG...] x32 i386 raw:NR
//! connect:PORT

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;

fn errno_result(rc: i64) -> String {
    if rc < 0 {
        format!(
            "errno:{}",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        )
    } else {
        "ok".into()
    }
}

fn io_result<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("errno:{}", e.raw_os_error().unwrap_or(-1)),
    }
}

/// Raw syscall with up to five arguments; returns -1 with errno set on failure.
fn sys(nr: libc::c_long, a: [libc::c_ulong; 5]) -> i64 {
    // SAFETY: every probe passes either integers or null/valid pointers for which the kernel
    // returns an error or writes nothing we later read; the probes are chosen to be harmless.
    unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) }
}

/// clone(2) with `flags`; reaps the child if one was created.
fn clone_probe(flags: libc::c_ulong) -> String {
    let rc = sys(
        libc::SYS_clone,
        [flags | libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0],
    );
    if rc == 0 {
        // SAFETY: we are the child of a fork-like clone; _exit skips destructors and atexit.
        unsafe { libc::_exit(0) };
    }
    if rc > 0 {
        // SAFETY: waiting for our own child; status pointer may be null.
        unsafe { libc::waitpid(rc as i32, std::ptr::null_mut(), 0) };
    }
    errno_result(rc)
}

fn status_fields() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("Cap") || l.starts_with("NoNewPrivs") || l.starts_with("Seccomp"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(";")
}

fn probe(name: &str) -> String {
    let (kind, arg) = name.split_once(':').unwrap_or((name, ""));
    match kind {
        "socket_inet" => sys(libc::SYS_socket, [2, 1, 0, 0, 0]).pipe(errno_result),
        "socket_inet6" => sys(libc::SYS_socket, [10, 1, 0, 0, 0]).pipe(errno_result),
        "socket_inet_udp" => sys(libc::SYS_socket, [2, 2, 0, 0, 0]).pipe(errno_result),
        "socket_unix" => sys(libc::SYS_socket, [1, 1, 0, 0, 0]).pipe(errno_result),
        "socketpair_unix" => {
            let mut fds = [0i32; 2];
            // SAFETY: fds is a valid 2-int buffer.
            let rc = unsafe { libc::socketpair(1, 1, 0, fds.as_mut_ptr()) };
            errno_result(rc.into())
        }
        "unshare" => {
            sys(libc::SYS_unshare, [libc::CLONE_NEWNS as _, 0, 0, 0, 0]).pipe(errno_result)
        }
        "unshare_user" => {
            sys(libc::SYS_unshare, [libc::CLONE_NEWUSER as _, 0, 0, 0, 0]).pipe(errno_result)
        }
        "mount" => {
            let (src, tgt, fs) = (c"none", c"/tmp", c"tmpfs");
            // SAFETY: valid NUL-terminated strings, null data.
            let rc = unsafe {
                libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, std::ptr::null())
            };
            if rc == 0 {
                // SAFETY: valid path; undo the mount we just made.
                unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) };
            }
            errno_result(rc.into())
        }
        // PTRACE_PEEKDATA on a pid that cannot exist: ESRCH when ptrace is let through, EPERM
        // when refused (TRACEME would make the probe stop on its next signal).
        "ptrace" => sys(
            libc::SYS_ptrace,
            [libc::PTRACE_PEEKDATA as _, i32::MAX as _, 0, 0, 0],
        )
        .pipe(errno_result),
        // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
        "keyctl" => sys(libc::SYS_keyctl, [0, -3i64 as u64, 0, 0, 0]).pipe(errno_result),
        // bpf(BPF_MAP_CREATE, NULL, 0): EFAULT/EINVAL unfiltered
        "bpf" => sys(libc::SYS_bpf, [0, 0, 0, 0, 0]).pipe(errno_result),
        "io_uring_setup" => sys(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0]).pipe(errno_result),
        // ADDR_NO_RANDOMIZE
        "personality_set" => sys(libc::SYS_personality, [0x0040000, 0, 0, 0, 0]).pipe(errno_result),
        "personality_query" => {
            sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0]).pipe(errno_result)
        }
        "clone_newns" => clone_probe(libc::CLONE_NEWNS as _),
        "clone_newuser" => clone_probe(libc::CLONE_NEWUSER as _),
        "clone3" => sys(libc::SYS_clone3, [0, 0, 0, 0, 0]).pipe(errno_result),
        // ioctl(0, TIOCSTI, &c): ENOTTY when stdin is not a tty and the call was let through.
        "tiocsti" | "tiocsti_hi" => {
            let c = 0u8;
            let cmd: u64 = if kind == "tiocsti" {
                0x5412
            } else {
                0x1_0000_5412
            };
            sys(libc::SYS_ioctl, [0, cmd, &c as *const u8 as _, 0, 0]).pipe(errno_result)
        }
        "thread" => match std::thread::spawn(|| 42).join() {
            Ok(42) => "ok".into(),
            _ => "failed".into(),
        },
        "fork" => match Command::new("/bin/true").status() {
            Ok(s) if s.success() => "ok".into(),
            Ok(s) => format!("status:{s}"),
            Err(e) => io_result::<()>(Err(e)),
        },
        "read" => io_result(std::fs::read(arg)),
        "write" => io_result(std::fs::File::create(arg).and_then(|mut f| f.write_all(b"x"))),
        "status" => status_fields(),
        "securebits" => {
            // SAFETY: integer-only prctl.
            let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
            format!("{bits:#x}")
        }
        // Try to clear the securebits again (they are locked from isolated up).
        "unlock_securebits" => {
            // SAFETY: integer-only prctl.
            let rc = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, 0, 0, 0, 0) };
            errno_result(rc.into())
        }
        "exec" => {
            let parts: Vec<&str> = arg.split(',').collect();
            match Command::new(parts[0]).args(&parts[1..]).output() {
                Ok(o) => format!(
                    "exit:{};out:{}",
                    o.status.code().map_or("signal".into(), |c| c.to_string()),
                    String::from_utf8_lossy(&o.stdout).trim()
                ),
                Err(e) => io_result::<()>(Err(e)),
            }
        }
        "connect" => {
            let port: u16 = arg.parse().expect("connect:PORT");
            io_result(
                std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                    let mut b = [0u8; 2];
                    s.read(&mut b)
                }),
            )
        }
        // getpid through the x32 table: the allowlist's guard kills the process.
        "x32" => sys(0x4000_0000 | libc::SYS_getpid, [0; 5]).pipe(errno_result),
        // getpid (20) through the i386 entry point: a foreign architecture, killed.
        "i386" => {
            let ret: i32;
            // SAFETY: `int 0x80` enters the kernel's 32-bit syscall path with eax = 20 (getpid),
            // which takes no arguments and touches no memory; the registers the 32-bit ABI may
            // clobber are declared.
            unsafe {
                std::arch::asm!("int 0x80", inlateout("eax") 20i32 => ret,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _, options(nostack));
            }
            if ret < 0 {
                format!("errno:{}", -ret)
            } else {
                "ok".into()
            }
        }
        // Any syscall by number with zero arguments (calls newer than libc's constants).
        "raw" => {
            let nr: libc::c_long = arg.parse().expect("raw:NR");
            sys(nr, [0; 5]).pipe(errno_result)
        }
        _ => format!("unknown probe {name}"),
    }
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}

fn main() {
    let mut out = BTreeMap::new();
    for p in std::env::args().skip(1) {
        let r = probe(&p);
        out.insert(p, r);
    }
    println!("{}", serde_json::to_string(&out).expect("serialise"));
}

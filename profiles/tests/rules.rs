//! What each tier's seccomp programs do with specific calls, checked against the compiled BPF
//! (run by the crate's user-space interpreter) rather than against the rule tables alone.
//! Real-kernel counterparts live in `sandbox/tests/confine*.rs`.

use perry_policies::{Tier, TierOverride};
use perry_profiles::seccomp::{ArgCheck, ArgRule, Op, SeccompProgram, Width};
use perry_profiles::{Grants, NetworkGrant, Profile, ProfileError, Verdict};
use proptest::prelude::*;

const EPERM: Verdict = Verdict::Errno(1);
const ENOSYS: Verdict = Verdict::Errno(38);
const X86_64: u32 = 0xC000_003E;
const I386: u32 = 0x4000_0003;

fn profile(tier: Tier) -> Profile {
    Profile::for_tier(tier, None, &Grants::default()).unwrap()
}

fn with_deny(tier: Tier, deny: &[&str]) -> Result<Profile, ProfileError> {
    let ov = TierOverride {
        deny_syscalls: deny.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Profile::for_tier(tier, Some(&ov), &Grants::default())
}

fn call(p: &Profile, name: &str, args: &[u64]) -> Verdict {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    p.seccomp.evaluate_name(name, &a).expect(name)
}

// ---------------------------------------------------------------- fail closed

#[test]
fn unknown_syscall_name_is_an_error_not_an_allow() {
    for tier in Tier::ALL {
        assert_eq!(
            with_deny(tier, &["not_a_syscall"]).unwrap_err(),
            ProfileError::UnknownSyscall("not_a_syscall".into())
        );
        // 32-bit-only names do not exist on x86_64: refusing them would silently do nothing.
        assert_eq!(
            with_deny(tier, &["mmap2"]).unwrap_err(),
            ProfileError::UnknownSyscall("mmap2".into())
        );
        // Case matters: the kernel table is lowercase.
        assert!(with_deny(tier, &["MOUNT"]).is_err());
    }
    let msg = with_deny(Tier::Hardened, &["frobnicate"])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unknown syscall `frobnicate`"), "{msg}");
}

/// seccompiler's table stops at Linux 6.12; calls added later are handled by number.
#[test]
fn calls_newer_than_seccompilers_table_are_denied_by_number() {
    let newer = [
        ("setxattrat", 463i32),
        ("getxattrat", 464),
        ("listxattrat", 465),
        ("removexattrat", 466),
        ("open_tree_attr", 467),
        ("file_getattr", 468),
        ("file_setattr", 469),
    ];
    for tier in Tier::ALL {
        let plain = profile(tier);
        let denied = with_deny(tier, &newer.map(|(n, _)| n)).unwrap();
        for (name, nr) in newer {
            assert_eq!(
                perry_profiles::syscalls::number(name),
                Some(i64::from(nr)),
                "{name} is in the table"
            );
            // Not on any allowlist: unknown to a tier means ENOSYS, never allowed.
            assert_eq!(
                plain.seccomp.evaluate(X86_64, nr, &[0; 6]),
                ENOSYS,
                "{tier} {name}"
            );
            // Named in deny_syscalls: EPERM, by number.
            assert_eq!(
                denied.seccomp.evaluate(X86_64, nr, &[0; 6]),
                EPERM,
                "{tier} {name}"
            );
        }
    }
    // Numbers beyond every table are still refused (ENOSYS), never allowed.
    for nr in [470, 471, 500, 1000, 0x3fff_ffff] {
        assert_eq!(
            profile(Tier::Default).seccomp.evaluate(X86_64, nr, &[0; 6]),
            ENOSYS
        );
    }
}

#[test]
fn foreign_architectures_and_x32_are_killed() {
    for tier in Tier::ALL {
        let p = profile(tier);
        // i386 getpid (20) and i386 read (3): same numbers mean other calls there.
        for nr in [3, 20, 0, 11] {
            assert_eq!(
                p.seccomp.evaluate(I386, nr, &[0; 6]),
                Verdict::Kill,
                "{tier}"
            );
        }
        for arch in [
            0,
            0xC000_00B7, /* aarch64 */
            0x4000_003E, /* x86_64 without 64-bit flag */
        ] {
            assert_eq!(
                p.seccomp.evaluate(arch, 39, &[0; 6]),
                Verdict::Kill,
                "{tier} {arch:#x}"
            );
        }
        // x32: same arch value, bit 30 set in the number. getpid and read are allowed natively.
        for nr in [
            0x4000_0000 | 39,
            0x4000_0000,
            0x4000_0000 | 512,
            -1,
            i32::MAX,
        ] {
            assert_eq!(
                p.seccomp.evaluate(X86_64, nr, &[0; 6]),
                Verdict::Kill,
                "{tier} {nr:#x}"
            );
        }
        assert_eq!(call(&p, "getpid", &[]), Verdict::Allow);
    }
}

// ---------------------------------------------------------------- clone, clone3

#[test]
fn clone3_is_enosys_in_every_tier_whatever_the_config() {
    for tier in Tier::ALL {
        for p in [
            profile(tier),
            // Denying clone3 explicitly must not turn it into EPERM (glibc would stop starting threads).
            with_deny(tier, &["clone3"]).unwrap(),
        ] {
            assert_eq!(call(&p, "clone3", &[]), ENOSYS, "{tier}");
            assert_eq!(call(&p, "clone3", &[0x7fff_0000, 88]), ENOSYS, "{tier}");
            assert_eq!(p.seccomp.rules().refusal("clone3"), Some(38));
        }
    }
}

const CLONE_NEW: [(u64, &str); 7] = [
    (0x0002_0000, "CLONE_NEWNS"),
    (0x0200_0000, "CLONE_NEWCGROUP"),
    (0x0400_0000, "CLONE_NEWUTS"),
    (0x0800_0000, "CLONE_NEWIPC"),
    (0x1000_0000, "CLONE_NEWUSER"),
    (0x2000_0000, "CLONE_NEWPID"),
    (0x4000_0000, "CLONE_NEWNET"),
];
/// What glibc's pthread_create passes to clone.
const THREAD_FLAGS: u64 = 0x003d_0f00;
const SIGCHLD: u64 = 17;

#[test]
fn clone_namespace_flags_are_eperm_and_threads_are_not() {
    for tier in Tier::ALL {
        let p = profile(tier);
        assert_eq!(call(&p, "clone", &[THREAD_FLAGS]), Verdict::Allow, "{tier}");
        assert_eq!(call(&p, "clone", &[SIGCHLD]), Verdict::Allow, "{tier} fork");
        // The kernel ignores the upper half of clone's flags; junk there changes nothing.
        assert_eq!(
            call(&p, "clone", &[0xffff_ffff_0000_0000 | SIGCHLD]),
            Verdict::Allow
        );
        for (flag, name) in CLONE_NEW {
            assert_eq!(call(&p, "clone", &[flag | SIGCHLD]), EPERM, "{tier} {name}");
            assert_eq!(
                call(&p, "clone", &[flag | THREAD_FLAGS]),
                EPERM,
                "{tier} {name}"
            );
            assert_eq!(
                call(&p, "clone", &[0xffff_ffff_0000_0000 | flag | SIGCHLD]),
                EPERM,
                "{tier} {name} with junk above"
            );
        }
        let all: u64 = CLONE_NEW.iter().map(|(f, _)| f).sum();
        assert_eq!(call(&p, "clone", &[all]), EPERM, "{tier}");
    }
}

// ---------------------------------------------------------------- sockets

const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const AF_NETLINK: u64 = 16;
const AF_PACKET: u64 = 17;
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;
const SOCK_STREAM: u64 = 1;
const SOCK_DGRAM: u64 = 2;
const SOCK_RAW: u64 = 3;
const SOCK_CLOEXEC: u64 = 0o2000000;
const SOCK_NONBLOCK: u64 = 0o4000;

#[test]
fn default_allows_every_family_but_alg_and_vsock() {
    let p = profile(Tier::Default);
    for fam in [
        AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, 39, 41, 44,
    ] {
        assert_eq!(
            call(&p, "socket", &[fam, SOCK_STREAM]),
            Verdict::Allow,
            "{fam}"
        );
    }
    for fam in [AF_ALG, AF_VSOCK] {
        assert_ne!(
            call(&p, "socket", &[fam, SOCK_STREAM]),
            Verdict::Allow,
            "{fam}"
        );
    }
}

#[test]
fn isolated_and_stricter_allow_only_af_unix() {
    for tier in [Tier::Isolated, Tier::Hardened, Tier::Untrusted] {
        let p = profile(tier);
        for ty in [SOCK_STREAM, SOCK_DGRAM, SOCK_STREAM | SOCK_CLOEXEC] {
            assert_eq!(call(&p, "socket", &[AF_UNIX, ty]), Verdict::Allow, "{tier}");
            assert_eq!(
                call(&p, "socketpair", &[AF_UNIX, ty]),
                Verdict::Allow,
                "{tier}"
            );
        }
        for fam in [
            AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_ALG, AF_VSOCK, 0, 45, 0xffff,
        ] {
            for ty in [SOCK_STREAM, SOCK_DGRAM, SOCK_RAW] {
                assert_eq!(call(&p, "socket", &[fam, ty]), EPERM, "{tier} family {fam}");
                assert_eq!(
                    call(&p, "socketpair", &[fam, ty]),
                    EPERM,
                    "{tier} family {fam}"
                );
            }
        }
        // The family is a C int: the kernel ignores the upper half, so must the filter, both
        // ways (AF_INET in disguise is refused; AF_UNIX in disguise is AF_UNIX).
        assert_eq!(
            call(&p, "socket", &[(1 << 32) | AF_INET, SOCK_STREAM]),
            EPERM
        );
        assert_eq!(
            call(&p, "socket", &[(1 << 32) | AF_UNIX, SOCK_STREAM]),
            Verdict::Allow
        );
    }
}

#[test]
fn a_network_grant_opens_tcp_only_and_only_where_the_tier_allows_it() {
    let grant = Grants {
        network: Some(NetworkGrant {
            tcp_connect: vec![443],
            tcp_bind: vec![],
        }),
        ..Default::default()
    };
    let p = Profile::for_tier(Tier::Hardened, None, &grant).unwrap();
    for fam in [AF_INET, AF_INET6] {
        for ty in [SOCK_STREAM, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK] {
            assert_eq!(call(&p, "socket", &[fam, ty, 0]), Verdict::Allow);
            assert_eq!(call(&p, "socket", &[fam, ty, 6]), Verdict::Allow);
        }
        // UDP and raw sockets: EPERM. SCTP streams (protocol 132) would dodge Landlock's TCP
        // port rules: refused.
        assert_eq!(call(&p, "socket", &[fam, SOCK_DGRAM, 0]), EPERM);
        assert_eq!(call(&p, "socket", &[fam, SOCK_RAW, 1]), EPERM);
        assert_ne!(call(&p, "socket", &[fam, SOCK_STREAM, 132]), Verdict::Allow);
    }
    assert_eq!(call(&p, "socket", &[AF_NETLINK, SOCK_RAW]), EPERM);
    assert_eq!(call(&p, "socket", &[AF_PACKET, SOCK_RAW]), EPERM);
    assert_eq!(call(&p, "socketpair", &[AF_INET, SOCK_STREAM]), EPERM);
    assert_eq!(p.landlock.as_ref().unwrap().tcp_connect, vec![443]);
    // The untrusted and isolated tiers refuse the grant outright: nothing runs.
    for tier in [Tier::Isolated, Tier::Untrusted] {
        assert!(matches!(
            Profile::for_tier(tier, None, &grant),
            Err(ProfileError::GrantRefused { .. })
        ));
    }
    // ... and so does hardened once the site turned networking off.
    let off = TierOverride {
        network: Some(false),
        ..Default::default()
    };
    assert!(Profile::for_tier(Tier::Hardened, Some(&off), &grant).is_err());
}

// ---------------------------------------------------------------- ioctl, personality

const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
const TCGETS: u64 = 0x5401;
const FIONREAD: u64 = 0x541B;

#[test]
fn tiocsti_and_tioclinux_are_eperm_from_hardened_up() {
    for tier in [Tier::Hardened, Tier::Untrusted] {
        let p = profile(tier);
        for cmd in [
            TIOCSTI,
            TIOCLINUX,
            (1 << 32) | TIOCSTI,
            (0xdead << 32) | TIOCLINUX,
        ] {
            assert_eq!(call(&p, "ioctl", &[0, cmd]), EPERM, "{tier} {cmd:#x}");
        }
        for cmd in [TCGETS, FIONREAD, 0] {
            assert_eq!(
                call(&p, "ioctl", &[1, cmd]),
                Verdict::Allow,
                "{tier} {cmd:#x}"
            );
        }
    }
    for tier in [Tier::Default, Tier::Isolated] {
        assert_eq!(call(&profile(tier), "ioctl", &[0, TCGETS]), Verdict::Allow);
    }
}

#[test]
fn personality_changes_are_eperm_from_hardened_up() {
    const QUERY: u64 = 0xffff_ffff;
    const ADDR_NO_RANDOMIZE: u64 = 0x0040000;
    const READ_IMPLIES_EXEC: u64 = 0x0400000;
    for tier in [Tier::Hardened, Tier::Untrusted] {
        let p = profile(tier);
        assert_eq!(call(&p, "personality", &[QUERY]), Verdict::Allow);
        for v in [0, ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, 8] {
            assert_eq!(call(&p, "personality", &[v]), EPERM, "{tier} {v:#x}");
        }
    }
    for tier in [Tier::Default, Tier::Isolated] {
        let p = profile(tier);
        assert_eq!(call(&p, "personality", &[0]), Verdict::Allow);
        assert_eq!(call(&p, "personality", &[QUERY]), Verdict::Allow);
        assert_ne!(
            call(&p, "personality", &[ADDR_NO_RANDOMIZE]),
            Verdict::Allow
        );
        assert_ne!(
            call(&p, "personality", &[READ_IMPLIES_EXEC]),
            Verdict::Allow
        );
    }
}

// ---------------------------------------------------------------- dangerous calls

/// From hardened up these are refused with EPERM: they are the sandbox's walls (mount,
/// namespaces), other processes' memory (ptrace, process_vm_*), kernel attack surface (bpf,
/// io_uring, keyctl, userfaultfd, perf), and the host itself (reboot, modules, clock).
const HARDENED_EPERM: [&str; 30] = [
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "perf_event_open",
    "kexec_load",
    "init_module",
    "finit_module",
    "reboot",
    "open_by_handle_at",
    "clock_settime",
    "swapon",
    "syslog",
];

#[test]
fn dangerous_calls_are_eperm_from_hardened_up() {
    for tier in [Tier::Hardened, Tier::Untrusted] {
        let p = profile(tier);
        for name in HARDENED_EPERM {
            assert_eq!(call(&p, name, &[]), EPERM, "{tier} {name}");
            assert_eq!(call(&p, name, &[u64::MAX; 6]), EPERM, "{tier} {name}");
        }
        // SysV IPC: not on the allowlist (ENOSYS).
        for name in ["shmget", "shmat", "msgget", "semget", "semop"] {
            assert_eq!(call(&p, name, &[]), ENOSYS, "{tier} {name}");
        }
    }
}

#[test]
fn ordinary_work_is_allowed_in_every_tier() {
    for tier in Tier::ALL {
        let p = profile(tier);
        for name in [
            "read",
            "write",
            "openat",
            "close",
            "mmap",
            "mprotect",
            "munmap",
            "brk",
            "execve",
            "exit_group",
            "futex",
            "rt_sigaction",
            "newfstatat",
            "getdents64",
            "wait4",
            "pipe2",
            "set_robust_list",
            "rseq",
            "getrandom",
            "prctl",
            "fork",
            "vfork",
        ] {
            assert_eq!(call(&p, name, &[]), Verdict::Allow, "{tier} {name}");
        }
    }
}

// ---------------------------------------------------------------- BPF matches the rules

/// The rules' meaning, computed without BPF: EPERM when a rule of the stacked filter matches,
/// else allowed when an allowlist rule matches, else ENOSYS.
fn by_rules(p: &Profile, name: &str, args: &[u64; 6]) -> Verdict {
    let holds = |c: &ArgCheck| {
        let v = match c.width {
            Width::Dword => args[c.index as usize] & 0xffff_ffff,
            Width::Qword => args[c.index as usize],
        };
        match c.op {
            Op::Eq => v == c.value,
            Op::Ne => v != c.value,
            Op::Lt => v < c.value,
            Op::Gt => v > c.value,
            Op::MaskedEq { mask } => v & mask == c.value,
        }
    };
    let matches =
        |rs: &Vec<ArgRule>| rs.is_empty() || rs.iter().any(|r| r.checks.iter().all(holds));
    let r = p.seccomp.rules();
    if r.eperm.get(name).is_some_and(matches) {
        EPERM
    } else if r.allow.get(name).is_some_and(matches) {
        Verdict::Allow
    } else {
        ENOSYS
    }
}

fn interesting_arg() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(AF_UNIX),
        Just(AF_INET),
        Just(AF_INET6),
        Just(AF_NETLINK),
        Just(AF_ALG),
        Just(39),
        Just(AF_VSOCK),
        Just(SOCK_STREAM),
        Just(SOCK_DGRAM),
        Just(SOCK_STREAM | SOCK_CLOEXEC),
        Just(6),
        Just(132),
        Just(TIOCSTI),
        Just(TIOCLINUX),
        Just(0xffff_ffff),
        Just(0x0040000),
        Just(0x20008),
        Just(THREAD_FLAGS),
        (0..7usize).prop_map(|i| CLONE_NEW[i].0 | SIGCHLD),
        any::<u32>().prop_map(u64::from),
        any::<u64>(),
        (any::<u32>(), 0..50u64).prop_map(|(hi, lo)| (u64::from(hi) << 32) | lo),
    ]
}

fn profiles_under_test() -> Vec<Profile> {
    let grant = Grants {
        network: Some(NetworkGrant {
            tcp_connect: vec![80],
            tcp_bind: vec![8080],
        }),
        ..Default::default()
    };
    let mut v: Vec<Profile> = Tier::ALL.into_iter().map(profile).collect();
    v.push(Profile::for_tier(Tier::Default, None, &grant).unwrap());
    v.push(Profile::for_tier(Tier::Hardened, None, &grant).unwrap());
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The compiled BPF (both filters, as the kernel combines them) means exactly what the rules
    /// say, for the argument-checked calls and random arguments.
    #[test]
    fn bpf_agrees_with_rules(
        which in 0..6usize,
        name in prop::sample::select(vec!["socket", "socketpair", "clone", "ioctl", "personality", "clone3", "mount", "read"]),
        args in prop::array::uniform6(interesting_arg()),
    ) {
        let p = &profiles_under_test()[which];
        prop_assert_eq!(call(p, name, &args), by_rules(p, name, &args), "{} {} {:x?}", p.tier, name, args);
    }
}

/// Every known syscall, each tier: the BPF verdict with zero and with all-ones arguments equals
/// the rules' verdict.
#[test]
fn bpf_agrees_with_rules_for_every_known_call() {
    for p in profiles_under_test() {
        for name in perry_profiles::syscalls::all_names() {
            for args in [[0u64; 6], [u64::MAX; 6], [1, 1, 0, 0, 0, 0]] {
                assert_eq!(
                    call(&p, name, &args),
                    by_rules(&p, name, &args),
                    "{} {name}",
                    p.tier
                );
            }
        }
    }
}

#[test]
fn programs_fit_the_kernel_and_are_compiled_once() {
    for tier in Tier::ALL {
        let a = profile(tier);
        let b = profile(tier);
        assert!(
            std::sync::Arc::ptr_eq(&a.seccomp, &b.seccomp),
            "{tier}: cached"
        );
        let s: &SeccompProgram = &a.seccomp;
        assert!(s.allowlist.len() < 4096 && s.eperm.len() < 4096);
        // A different deny list is a different program.
        let c = with_deny(tier, &["getpid"]).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&a.seccomp, &c.seccomp));
        assert_eq!(call(&c, "getpid", &[]), EPERM);
    }
}

#!/usr/bin/env python3
"""One-off generator for this directory's data files, kept so the provenance is reviewable.

Inputs are the shared reference files (see README.md); outputs are committed and are the only
thing the crate reads. Re-run only when deliberately changing the tier tables:
    python3 gen-data.py /path/to/shared/data/syscalls
"""
import json, sys, os
src = sys.argv[1]
ref = json.load(open(os.path.join(src, "seccomp-tiers.seccompiler.json")))
groups = json.load(open(os.path.join(src, "systemd-syscall-groups.json")))
TIERS = ["default", "isolated", "hardened", "untrusted"]
# Argument-filtered calls are handled in code (rules.rs); their names stay in the allow lists.
CODE = {"socket", "socketpair", "personality"}
allow, eperm = {}, {}
for t in TIERS:
    names = {r["syscall"] for r in ref[t]["filter"]}
    names |= {"ioctl", "personality"}  # ioctl: TIOCSTI/TIOCLINUX by argument; personality: query by argument
    allow[t] = sorted(names)
    e = {r["syscall"] for r in ref[t + "_eperm"]["filter"]} - CODE
    eperm[t] = sorted(e)
    both = set(allow[t]) & e
    assert not both, (t, both)
out = {
    "_comment": "Per-tier seccomp name lists (x86_64). allow: the allowlist (anything else -> ENOSYS). "
                "eperm: the stacked filter (-> EPERM). Argument rules for socket, socketpair, personality, "
                "clone and ioctl live in src/rules.rs. Derived from shared/data/syscalls/seccomp-tiers.seccompiler.json "
                "(exercised with git, coreutils, busybox and python threads) by gen-data.py.",
    "allow": allow,
    "eperm": eperm,
}
json.dump(out, open("tiers.json", "w"), indent=1, sort_keys=True)
nums = {k: v["x86_64"] for k, v in groups["syscall_numbers"].items()
        if isinstance(v, dict) and v.get("x86_64") is not None}
nums["open_tree_attr"] = 467  # kernel 6.15, missing from systemd 257's list
# Removed calls whose x86_64 numbers stay reserved (the kernel returns ENOSYS); named so the EPERM
# filter can list them like moby does.
nums.update({"uselib": 134, "_sysctl": 156, "create_module": 174, "get_kernel_syms": 177,
             "query_module": 178, "nfsservctl": 180})
with open("syscalls-x86_64.txt", "w") as f:
    f.write("# x86_64 syscall numbers: name number. From systemd 257 src/basic/syscalls-x86_64.txt (via\n"
            "# shared/data/syscalls/systemd-syscall-groups.json) plus open_tree_attr (467, Linux 6.15) and six removed calls.\n"
            "# Covers calls newer than seccompiler's table (which stops at Linux 6.12).\n")
    for k, v in sorted(nums.items(), key=lambda kv: kv[1]):
        f.write(f"{k} {v}\n")
g = {"_comment": "systemd 257 syscall groups (expanded), used only to explain profiles to humans. " + groups["source"],
     "order": groups["order"],
     "groups": {k: {"help": v["help"], "syscalls": v["expanded"]} for k, v in groups["groups"].items()}}
json.dump(g, open("syscall-groups.json", "w"), indent=1, sort_keys=True)
for t in TIERS:
    missing = [n for n in allow[t] + eperm[t] if n not in nums]
    print(t, len(allow[t]), len(eperm[t]), "missing numbers:", missing)

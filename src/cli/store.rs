//! `perry-sandbox store ls|gc`: see what the content-addressed image store holds and reclaim
//! space without ever removing a blob an image that is kept still needs.

use std::process::ExitCode;

use clap::Subcommand;
use perry_policies::{Digest, HumanDuration};
use perry_sandbox::store::{
    inventory, BlobStore, GcOptions, Inventory, InventoryError, RootfsStore,
};

use super::{CliError, CliResult, Context, GlobalArgs};

/// `store` subcommands.
#[derive(Subcommand, Debug)]
pub(super) enum StoreCommand {
    /// List stored images (manifest digest, size, layers, unpacked or not) and blobs.
    Ls,
    /// Remove blobs no kept image needs. Kept: every image with an unpacked root filesystem and
    /// every --keep digest, with their configs and layers, and blobs younger than --grace.
    Gc {
        /// An image (manifest digest, sha256:…) to keep; repeatable.
        #[arg(long, value_name = "DIGEST")]
        keep: Vec<String>,
        /// Keep only the --keep images: also remove the unpacked root filesystems of all others.
        #[arg(long)]
        all: bool,
        /// Keep unreferenced blobs younger than this (a pull may be in progress elsewhere).
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        grace: String,
        /// Print what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a `store` subcommand.
pub(super) fn run(g: &GlobalArgs, cmd: StoreCommand) -> CliResult {
    let ctx = Context::load(g)?;
    let state = &ctx.config.sandbox.state_dir;
    let blobs = BlobStore::open_in(state).map_err(|e| CliError::internal(e.to_string()))?;
    let rootfs = RootfsStore::open_in(state).map_err(|e| CliError::internal(e.to_string()))?;
    match cmd {
        StoreCommand::Ls => ls(&ctx, &blobs, &rootfs),
        StoreCommand::Gc {
            keep,
            all,
            grace,
            dry_run,
        } => {
            let keep = keep
                .iter()
                .map(|k| {
                    Digest::parse(k).map_err(|e| {
                        CliError::invalid_argument(format!(
                            "--keep {k:?}: {e} (expected sha256:<64 hex>)"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let grace: HumanDuration = grace
                .parse()
                .map_err(|e| CliError::invalid_argument(format!("--grace {grace:?}: {e}")))?;
            let opts = GcOptions {
                keep,
                all,
                grace: grace.as_std(),
                dry_run,
            };
            gc(&ctx, &blobs, &rootfs, &opts)
        }
    }
}

fn store_error(e: InventoryError) -> CliError {
    CliError::internal(e.to_string())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ls(ctx: &Context, blobs: &BlobStore, rootfs: &RootfsStore) -> CliResult {
    let inv: Inventory = inventory::inventory(blobs, rootfs).map_err(store_error)?;
    if ctx.json {
        let v = serde_json::json!({ "ok": true, "store": inv });
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<72} {:>10} {:>6}  UNPACKED", "IMAGE", "SIZE", "LAYERS");
    for i in &inv.images {
        let note = if i.missing.is_empty() {
            String::new()
        } else {
            format!("  ({} blobs missing)", i.missing.len())
        };
        println!(
            "{:<72} {:>10} {:>6}  {}{note}",
            i.digest,
            human(i.size),
            i.layers,
            if i.unpacked { "yes" } else { "no" }
        );
    }
    println!();
    println!("{:<72} {:>10}  KIND", "BLOB", "SIZE");
    for b in &inv.blobs {
        let kind = serde_json::to_value(b.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        println!("{:<72} {:>10}  {kind}", b.digest, human(b.size));
    }
    for d in &inv.orphan_rootfs {
        println!("rootfs without a manifest blob: {d}");
    }
    println!(
        "{} images, {} blobs, {} total",
        inv.images.len(),
        inv.blobs.len(),
        human(inv.total_bytes)
    );
    Ok(ExitCode::SUCCESS)
}

fn gc(ctx: &Context, blobs: &BlobStore, rootfs: &RootfsStore, opts: &GcOptions) -> CliResult {
    let out = inventory::collect(blobs, rootfs, opts).map_err(store_error)?;
    if ctx.json {
        let v = serde_json::json!({ "ok": true, "dry_run": opts.dry_run, "gc": out });
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if opts.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for d in &out.removed_rootfs {
        println!("{verb} rootfs {d}");
    }
    for d in &out.removed_blobs {
        println!("{verb} blob {d}");
    }
    println!(
        "{verb} {} blobs and {} root filesystems, freeing {}; kept {} blobs ({} younger than the grace period)",
        out.removed_blobs.len(),
        out.removed_rootfs.len(),
        human(out.freed_bytes),
        out.kept_blobs,
        out.kept_young
    );
    Ok(ExitCode::SUCCESS)
}

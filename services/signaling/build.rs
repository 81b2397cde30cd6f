//! Embeds the web pages (`web/src/`) and their npm dependencies (hls.js, mpegts.js, pinned
//! in `web/package-lock.json`) into the binary, so `skylark` serves the studio and the
//! player with no files beside it.
//!
//! - Runs `npm ci --omit=dev` in `web/` when `web/node_modules` is missing or older than
//!   the lockfile (a clear error if npm is missing; `SKYLARK_WEB_SKIP_NPM=1` builds
//!   without the npm files: the player then has no HLS fallback).
//! - Hashes every embedded file into one build id: assets are served under
//!   `/assets/<build id>/…` (immutable, cached for a year) and the HTML pages, whose
//!   `{{ASSETS}}` placeholder becomes that prefix, are served with `no-cache`.
//! - Writes `$OUT_DIR/web_assets.rs`: the build id and a table of `include_bytes!`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// npm files served to browsers: (path under `/assets/<build>/`, path under `node_modules/`).
const VENDOR: &[(&str, &str)] = &[
    ("vendor/hls.min.mjs", "hls.js/dist/hls.min.mjs"),
    ("vendor/mpegts.js", "mpegts.js/dist/mpegts.js"),
    ("vendor/LICENSE.hls.js.txt", "hls.js/LICENSE"),
    ("vendor/LICENSE.mpegts.js.txt", "mpegts.js/LICENSE"),
];

const SKIP_NPM: &str = "SKYLARK_WEB_SKIP_NPM";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let web = manifest.join("..").join("..").join("web");
    let web = web.canonicalize().unwrap_or(web);
    let src = web.join("src");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));

    println!("cargo:rerun-if-env-changed={SKIP_NPM}");
    // Watched paths are given relative to this package: cargo records them as written,
    // and with absolute ones, two checkouts sharing a target directory watched only the
    // checkout that ran this script last: an edit to a page in the other was not embedded.
    let web_rel = Path::new("../../web");
    for watched in ["src", "package.json", "package-lock.json"] {
        println!("cargo:rerun-if-changed={}", web_rel.join(watched).display());
    }

    if !src.is_dir() {
        panic!(
            "the web pages' sources are missing: no directory {}",
            src.display()
        );
    }

    let skip_npm = env::var(SKIP_NPM).is_ok_and(|v| !v.is_empty() && v != "0");
    if !skip_npm {
        ensure_node_modules(&web);
    }

    // (served path, file on disk, contents)
    let mut files: Vec<(String, PathBuf, Vec<u8>)> = Vec::new();
    collect(&src, &src, &mut files);
    for (served, rel) in VENDOR {
        let path = web.join("node_modules").join(rel);
        match fs::read(&path) {
            Ok(bytes) => {
                let watched = web_rel.join("node_modules").join(rel);
                println!("cargo:rerun-if-changed={}", watched.display());
                files.push(((*served).to_string(), path, bytes));
            }
            Err(e) if skip_npm => {
                println!("cargo:warning={SKIP_NPM} set: {} not embedded ({e})", path.display());
            }
            Err(e) => panic!(
                "{} is missing after `npm ci` in {} ({e}): is web/package-lock.json in step with web/package.json?",
                path.display(),
                web.display()
            ),
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));

    // One id for the whole set: any change to any file gives new asset URLs.
    let mut h = Fnv::new();
    for (served, _, bytes) in &files {
        h.write(served.as_bytes());
        h.write(&[0]);
        h.write(bytes);
        h.write(&[0xff]);
    }
    let build = format!("{:016x}", h.0);
    let prefix = format!("/assets/{build}");

    let gen_dir = out.join("web");
    fs::create_dir_all(&gen_dir).expect("create OUT_DIR/web");
    let mut table = String::new();
    let mut pages = String::new();
    for (served, _, bytes) in &files {
        if let Some(page) = served.strip_suffix(".html") {
            if served.contains('/') {
                panic!("web/src/{served}: HTML pages live at the top of web/src");
            }
            let text = String::from_utf8(bytes.clone())
                .unwrap_or_else(|_| panic!("web/src/{served} is not UTF-8"));
            let gen = gen_dir.join(served);
            write_if_changed(&gen, text.replace("{{ASSETS}}", &prefix).as_bytes());
            writeln!(
                pages,
                "    ({page:?}, include_bytes!({:?})),",
                gen.display().to_string()
            )
            .unwrap();
        } else {
            // Embedded from a copy in OUT_DIR, not from the checkout: a target directory
            // shared by two checkouts then never names a file of the other one (which
            // may be gone) when this script did not rerun for this checkout.
            let gen = gen_dir.join(served);
            if let Some(dir) = gen.parent() {
                fs::create_dir_all(dir).expect("create a directory in OUT_DIR/web");
            }
            write_if_changed(&gen, bytes);
            writeln!(
                table,
                "    ({served:?}, include_bytes!({:?})),",
                gen.display().to_string()
            )
            .unwrap();
        }
    }
    let code = format!(
        "// Generated by services/signaling/build.rs from web/: do not edit.\n\
         /// Hash of every embedded web file: the asset URL prefix is `/assets/{{BUILD}}`.\n\
         pub(crate) const BUILD: &str = {build:?};\n\
         /// HTML pages by name (`studio` for web/src/studio.html), `{{{{ASSETS}}}}` replaced.\n\
         pub(crate) static PAGES: &[(&str, &[u8])] = &[\n{pages}];\n\
         /// Assets by path under `/assets/{{BUILD}}/`, sorted.\n\
         pub(crate) static ASSETS: &[(&str, &[u8])] = &[\n{table}];\n"
    );
    write_if_changed(&out.join("web_assets.rs"), code.as_bytes());
}

/// Runs `npm ci` in `web/` unless `node_modules` is newer than the lockfile.
fn ensure_node_modules(web: &Path) {
    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules").join(".package-lock.json");
    let fresh = match (mtime(&installed), mtime(&lock)) {
        (Some(i), Some(l)) => {
            i >= l
                && VENDOR
                    .iter()
                    .all(|(_, rel)| web.join("node_modules").join(rel).exists())
        }
        _ => false,
    };
    if fresh {
        return;
    }
    if !lock.exists() {
        panic!(
            "{} is missing: the web pages' npm dependencies must be pinned there",
            lock.display()
        );
    }
    println!(
        "cargo:warning=running `npm ci --omit=dev` in {} (hls.js, mpegts.js for the web player)",
        web.display()
    );
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let status = Command::new(npm)
        .args([
            "ci",
            "--omit=dev",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(web)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm ci --omit=dev` in {} failed ({s}): the web player's dependencies (hls.js, mpegts.js) \
             could not be installed. Check the network or npm's output above; or set {SKIP_NPM}=1 to \
             build without them (the player then has no HLS fallback).",
            web.display()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "building skylark's web pages needs npm (Node.js) to install hls.js and mpegts.js from \
             web/package-lock.json, and `{npm}` was not found on PATH. Install Node.js with npm \
             (e.g. `apt-get install nodejs npm`) and build again, or set {SKIP_NPM}=1 to build \
             without them (the player then has no HLS fallback)."
        ),
        Err(e) => panic!("could not run `{npm} ci` in {}: {e}", web.display()),
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Every file under `dir` (dotfiles skipped), as paths relative to `root` with `/`.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf, Vec<u8>)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let bytes =
                fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.push((rel, path, bytes));
        }
    }
}

/// Leaves the file (and its mtime) alone when the contents are the same.
fn write_if_changed(path: &Path, bytes: &[u8]) {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// FNV-1a, 64 bits: a stable content hash with no dependency (not for security).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

//! A private APT for kernel packages: its own sources, lists, cache and
//! (empty) package database under `target/kernels/apt`, selected with
//! `APT_CONFIG`. The host's sources.list and dpkg status are never read or
//! written, and nothing is installed: packages are only downloaded and
//! unpacked with `dpkg-deb -x`.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};

/// The suites whose kernels the matrix may want. Release files of a mirror
/// snapshot may be past their `Valid-Until`, which is why the config below
/// turns that check off: the signatures are still checked.
const SUITES: &[&str] = &[
    "bullseye",
    "bookworm",
    "bookworm-backports",
    "trixie",
    "trixie-backports",
    "forky",
    "sid",
    "experimental",
];

/// Debian's mirror; `VMATRACE_DEBIAN_MIRROR` overrides it.
const MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Package lists older than this are fetched again.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct Apt {
    dir: PathBuf,
    config: PathBuf,
}

/// One kernel's image package, as a suite has it.
#[derive(Clone, Debug)]
pub struct KernelPackage {
    pub suite: String,
    /// `linux-image-<release>`
    pub package: String,
    /// `uname -r`
    pub release: String,
    pub version: String,
}

impl Apt {
    /// Writes the private configuration (every time: it is cheap and keeps
    /// it in step with this file) and refreshes stale package lists.
    pub fn open(dir: &Path) -> Result<Apt> {
        if !Path::new(KEYRING).is_file() {
            bail!("{KEYRING} is missing: install the debian-archive-keyring package");
        }
        for sub in [
            "state/lists/partial",
            "cache/archives/partial",
            "etc/sources.list.d",
            "etc/preferences.d",
            "etc/apt.conf.d",
        ] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let status = dir.join("state/status");
        if !status.exists() {
            fs::write(&status, "")?; // no package is installed in this APT
        }
        let mirror = env::var("VMATRACE_DEBIAN_MIRROR").unwrap_or_else(|_| MIRROR.into());
        let sources: String = SUITES
            .iter()
            .map(|suite| format!("deb [signed-by={KEYRING}] {mirror} {suite} main\n"))
            .collect();
        fs::write(dir.join("etc/sources.list"), sources)?;
        let d = dir.display();
        let config = dir.join("apt.conf");
        fs::write(
            &config,
            format!(
                "Dir::State \"{d}/state\";\n\
                 Dir::State::status \"{d}/state/status\";\n\
                 Dir::Cache \"{d}/cache\";\n\
                 Dir::Etc::SourceList \"{d}/etc/sources.list\";\n\
                 Dir::Etc::SourceParts \"{d}/etc/sources.list.d\";\n\
                 Dir::Etc::Preferences \"{d}/etc/preferences\";\n\
                 Dir::Etc::PreferencesParts \"{d}/etc/preferences.d\";\n\
                 Dir::Etc::Parts \"{d}/etc/apt.conf.d\";\n\
                 APT::Architecture \"amd64\";\n\
                 APT::Architectures {{ \"amd64\"; }};\n\
                 APT::Sandbox::User \"root\";\n\
                 Acquire::Languages \"none\";\n\
                 Acquire::Check-Valid-Until \"false\";\n\
                 Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled \"false\";\n"
            ),
        )?;
        let apt = Apt {
            dir: dir.to_path_buf(),
            config,
        };
        apt.update_if_stale()?;
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C.UTF-8");
        command
    }

    fn update_if_stale(&self) -> Result<()> {
        let stamp = self.dir.join("state/updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LISTS_MAX_AGE);
        if fresh {
            return Ok(());
        }
        eprintln!(
            "xtask: fetching Debian's package lists ({})",
            SUITES.join(", ")
        );
        let out = self
            .command("apt-get")
            .args(["-q", "update"])
            .output()
            .context("running apt-get update")?;
        // apt-get update exits 0 even when a suite failed ("W:"/"E:" lines);
        // a suite that is gone is not fatal, but say so.
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines().filter(|l| l.starts_with("E:")) {
            eprintln!("xtask: apt: {line}");
        }
        if !out.status.success() {
            bail!("apt-get update failed ({}): {stderr}", out.status);
        }
        fs::write(&stamp, "")?;
        Ok(())
    }

    /// `apt-cache show NAME/SUITE`: the fields of that version.
    fn show(&self, package: &str, suite: &str) -> Result<String> {
        let spec = format!("{package}/{suite}");
        let out = self
            .command("apt-cache")
            .args(["show", "--no-all-versions", &spec])
            .output()
            .context("running apt-cache")?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!("{suite} has no package {package}");
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The cloud kernel of `suite`: the one its meta-package depends on, or
    /// the one of the given release.
    pub fn kernel_package(&self, suite: &str, release: Option<&str>) -> Result<KernelPackage> {
        let package = match release {
            Some(release) => format!("linux-image-{release}"),
            None => {
                let meta = self.show("linux-image-cloud-amd64", suite)?;
                field(&meta, "Depends")
                    .split([',', '|'])
                    .map(|d| d.split_whitespace().next().unwrap_or(""))
                    .find(|d| d.starts_with("linux-image-") && d.ends_with("-cloud-amd64"))
                    .with_context(|| format!("linux-image-cloud-amd64 in {suite} names no image"))?
                    .to_string()
            }
        };
        let fields = self.show(&package, suite)?;
        Ok(KernelPackage {
            suite: suite.to_string(),
            release: package["linux-image-".len()..].to_string(),
            version: field(&fields, "Version").to_string(),
            package,
        })
    }

    /// Downloads the kernel's packages: the image, and since Debian split
    /// it (7.x) the packages it depends on that carry the image, modules
    /// and config of the same release (`linux-binary-`, `linux-modules-`,
    /// `linux-base-<release>`).
    pub fn download_kernel(&self, debs: &Path, kernel: &KernelPackage) -> Result<Vec<PathBuf>> {
        let image = self.download(debs, &kernel.package, Some(&kernel.version))?;
        let mut all = vec![image.clone()];
        let depends = deb_field(&image, "Depends")?;
        for dependency in depends.split([',', '|']) {
            let mut words = dependency.split_whitespace();
            let name = words.next().unwrap_or("");
            if !name.starts_with("linux-") || !name.ends_with(&kernel.release) {
                continue;
            }
            // "(= VERSION)": the same build as the image.
            let version = dependency
                .split_once("(=")
                .map(|(_, v)| v.trim().trim_end_matches(')').trim().to_string());
            all.push(self.download(debs, name, version.as_deref())?);
        }
        Ok(all)
    }

    /// `apt-get download NAME[=VERSION]` into `debs`, unless already there.
    pub fn download(&self, debs: &Path, package: &str, version: Option<&str>) -> Result<PathBuf> {
        fs::create_dir_all(debs)?;
        if let Some(found) = find_deb(debs, package, version)? {
            return Ok(found);
        }
        let spec = match version {
            Some(v) => format!("{package}={v}"),
            None => package.to_string(),
        };
        eprintln!("xtask: apt-get download {spec}");
        let out = self
            .command("apt-get")
            .args(["-q", "download", &spec])
            .current_dir(debs)
            .output()
            .context("running apt-get download")?;
        if !out.status.success() {
            bail!(
                "apt-get download {spec} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        find_deb(debs, package, version)?
            .with_context(|| format!("apt-get download {spec} left no .deb in {}", debs.display()))
    }
}

/// `dpkg-deb -x`: unpack without installing.
pub fn unpack(deb: &Path, into: &Path) -> Result<()> {
    fs::create_dir_all(into)?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(into)
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed ({status})", deb.display());
    }
    Ok(())
}

/// Whether Debian version `a` sorts after `b` (`dpkg --compare-versions`).
pub fn version_greater(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success())
}

fn deb_field(deb: &Path, name: &str) -> Result<String> {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(name)
        .output()
        .context("running dpkg-deb -f")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A field of the first paragraph of `apt-cache show` output.
fn field<'a>(paragraph: &'a str, name: &str) -> &'a str {
    paragraph
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map_or("", str::trim)
}

/// A downloaded package file: `NAME_VERSION_ARCH.deb`, the version with
/// its epoch colon escaped as `%3a`.
fn find_deb(debs: &Path, package: &str, version: Option<&str>) -> Result<Option<PathBuf>> {
    let prefix = match version {
        Some(v) => format!("{package}_{}_", v.replace(':', "%3a")),
        None => format!("{package}_"),
    };
    for entry in fs::read_dir(debs)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

use anyhow::Result;
use std::process::ExitCode;

pub fn run(_tools: &crate::setup::Tools, _args: &[String]) -> Result<ExitCode> {
    anyhow::bail!("not yet")
}

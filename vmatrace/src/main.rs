use clap::Parser;
use vmatrace::{
    cli::Cli,
    error::{Failure, exit_code},
    session,
};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed.
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::OK
            });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => fail(Failure::environment(
            anyhow::anyhow!(e).context("starting the runtime"),
        )),
    };
    match runtime.block_on(session::run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(failure) => fail(failure),
    }
}

fn fail(failure: Failure) -> ! {
    eprintln!("vmatrace: {failure}");
    std::process::exit(failure.code);
}

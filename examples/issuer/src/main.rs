//! The issuer binary; see the `issuer` crate's documentation for its
//! commands and what it prints.

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("issuer: cannot start: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(issuer::run(std::env::args_os())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => match error.downcast::<clap::Error>() {
            // --help, --version and usage errors, printed as clap prints them.
            Ok(error) => error.exit(),
            Err(error) => {
                eprintln!("issuer: {error}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

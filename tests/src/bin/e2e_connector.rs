//! The connector as the end-to-end tests run it: `confidant_connector::cli`
//! in a tokio runtime, exactly as the `confidant-connector` binary does.

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("e2e_connector: cannot start: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(confidant_connector::cli::run(std::env::args_os())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => match error.downcast::<clap::Error>() {
            // --help and --version (stdout, exit 0) and usage errors
            // (stderr, exit 2), as clap prints them.
            Ok(error) => error.exit(),
            Err(error) => {
                eprintln!("e2e_connector: {error}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

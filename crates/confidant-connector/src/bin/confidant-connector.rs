//! The connector binary: serves the gRPC connector with its mailboxes in a
//! redb file under `--data-dir`. See `confidant_connector::cli`.

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("confidant-connector: cannot start: {error}");
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
                eprintln!("confidant-connector: {error}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

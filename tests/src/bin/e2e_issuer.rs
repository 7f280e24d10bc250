//! The `issuer` example app as the end-to-end tests run it: `issuer::run`
//! with this process's command line, in a tokio runtime.

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("e2e_issuer: cannot start: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(issuer::run(std::env::args_os())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => match error.downcast::<clap::Error>() {
            // --help, --version and usage errors, as the app's binary.
            Ok(error) => error.exit(),
            Err(error) => {
                eprintln!("e2e_issuer: {error}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

//! The `intr-explorer` executable: a thin wrapper that runs the CLI and turns errors into a message
//! on stderr and a non-zero exit code (2 for usage errors).

fn main() {
    match intr_explorer::cli::run() {
        Ok(code) => std::process::exit(code),
        Err(e) if intr_explorer::cli::is_broken_pipe(&e) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(intr_explorer::cli::exit_code(&e));
        }
    }
}

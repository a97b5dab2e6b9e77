//! `cargo run -p perry-compose --example config -- FILE...`: prints the loaded
//! project as JSON (what `perry-sandbox compose config --format json` prints).

fn main() {
    let files: Vec<std::path::PathBuf> = std::env::args().skip(1).map(Into::into).collect();
    let opts = perry_compose::LoadOptions {
        files,
        environment: std::env::vars().collect(),
        ..Default::default()
    };
    match perry_compose::load(&opts) {
        Ok(p) => println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default()),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}

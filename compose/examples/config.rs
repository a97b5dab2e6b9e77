//! `cargo run -p perry-compose --example config -- FILE...`: prints the loaded
//! project as JSON (what `perry-sandbox compose config --format json` prints);
//! `--yaml` first prints YAML through serde-saphyr instead.

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let yaml = args.first().is_some_and(|a| a == "--yaml");
    if yaml {
        args.remove(0);
    }
    let files: Vec<std::path::PathBuf> = args.into_iter().map(Into::into).collect();
    let opts = perry_compose::LoadOptions {
        files,
        environment: std::env::vars().collect(),
        ..Default::default()
    };
    match perry_compose::load(&opts) {
        Ok(p) if yaml => print!("{}", serde_saphyr::to_string(&p).unwrap_or_default()),
        Ok(p) => println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default()),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}

//! Parse feed files and print the result as JSON, the way `tidings feed parse` does.
//!
//! `cargo run -p tidings-feed --example parse -- [--content-type T] [--url U] FILE...`

use tidings_feed::{FeedInput, parse};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut content_type = None;
    let mut url = None;
    let mut files = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--content-type" => content_type = args.next(),
            "--url" => url = args.next(),
            _ => files.push(a),
        }
    }
    if files.is_empty() {
        eprintln!("usage: parse [--content-type T] [--url U] FILE...");
        std::process::exit(2);
    }
    for file in files {
        let body = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{file}: {e}");
                std::process::exit(1);
            }
        };
        let feed = parse(FeedInput {
            body: &body,
            content_type: content_type.as_deref(),
            url: url.as_deref(),
            ..FeedInput::default()
        });
        match serde_json::to_string_pretty(&feed) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("{file}: {e}"),
        }
    }
}

//! `nurtured key new NAME --scopes ...`: a fresh random API key, printed once with the
//! `[[api_keys]]` entry that holds only its hash.

use std::process::ExitCode;

use crate::config::http::{Scope, new_key};

pub fn new(name: &str, scopes: &[String]) -> anyhow::Result<ExitCode> {
    let mut parsed = Vec::new();
    for s in scopes {
        let Some(scope) = Scope::parse(s.trim()) else {
            anyhow::bail!("`{s}` is not a scope: use ingest, read, write or admin");
        };
        if !parsed.contains(&scope) {
            parsed.push(scope);
        }
    }
    if parsed.is_empty() {
        anyhow::bail!("give the key's scopes, e.g. --scopes ingest or --scopes read,write");
    }
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        anyhow::bail!("`{name}` is not a key name: use 1 to 64 letters, digits, `-`, `_` or `.`");
    }
    let (key, entry) = new_key(name, &parsed)
        .map_err(|e| anyhow::anyhow!("the system gave no random bytes: {e}"))?;
    eprintln!("The key (shown only now; give it to the client, e.g. as the Segment write key):");
    println!("{key}");
    eprintln!("\nAdd this entry to nurtured.toml (it holds only the key's hash):\n");
    println!("\n{entry}");
    Ok(ExitCode::SUCCESS)
}

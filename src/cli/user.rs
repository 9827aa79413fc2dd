//! `nurtured user add NAME --role ROLE`: asks for a console password twice (from the
//! terminal, or as two lines on standard input when that is not a terminal) and prints
//! the `[[users]]` entry with its argon2id hash, to paste into the config.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use crate::config::users::{Role, hash_password};

/// Passwords shorter than this are refused.
const MIN_PASSWORD: usize = 10;

/// What `user add` is told besides the password.
pub struct NewUser<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub email: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub language: Option<&'a str>,
}

fn read_twice() -> anyhow::Result<(String, String)> {
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("Password: ")?;
        let b = rpassword::prompt_password("The same password again: ")?;
        return Ok((a, b));
    }
    let mut lines = std::io::stdin().lock().lines();
    let mut next = |which: &str| -> anyhow::Result<String> {
        match lines.next() {
            Some(line) => Ok(line?.trim_end_matches('\r').to_string()),
            None => anyhow::bail!(
                "standard input ended before the {which} password: give the password on two lines"
            ),
        }
    };
    let a = next("first")?;
    let b = next("second")?;
    Ok((a, b))
}

/// TOML string with the quotes.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

pub fn add(u: &NewUser) -> anyhow::Result<ExitCode> {
    let name = u.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
    {
        anyhow::bail!(
            "`{name}` is not a user name: use 1 to 64 letters, digits, '.', '-', '_' or '@'"
        );
    }
    let Some(role) = Role::parse(u.role.trim()) else {
        anyhow::bail!("`{}` is not a role: use marketing, sales or admin", u.role);
    };
    if let Some(e) = u.email
        && e.trim().parse::<lettre::Address>().is_err()
    {
        anyhow::bail!("`{e}` is not an e-mail address");
    }
    if let Some(l) = u.language
        && !matches!(l, "de" | "en")
    {
        anyhow::bail!("`{l}` is not a console language: use de or en");
    }
    let (a, b) = read_twice()?;
    if a != b {
        anyhow::bail!("the two passwords differ; nothing was printed, run the command again");
    }
    if a.chars().count() < MIN_PASSWORD {
        anyhow::bail!("the password is too short: use at least {MIN_PASSWORD} characters");
    }
    let hash = hash_password(&a).map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    let mut entry = format!("[[users]]\nname = {}\n", quoted(name));
    if let Some(e) = u.email {
        entry.push_str(&format!(
            "email = {}\n",
            quoted(&e.trim().to_ascii_lowercase())
        ));
    }
    entry.push_str(&format!("role = {}\n", quoted(role.as_str())));
    if let Some(o) = u.owner {
        entry.push_str(&format!("owner = {}\n", quoted(o.trim())));
    }
    if let Some(l) = u.language {
        entry.push_str(&format!("language = {}\n", quoted(l)));
    }
    entry.push_str(&format!("password_hash = {}\n", quoted(&hash)));
    eprintln!(
        "Add this entry to nurtured.toml (it holds only the password's hash); the running daemon needs a restart to read it:\n"
    );
    println!("{entry}");
    Ok(ExitCode::SUCCESS)
}
